"""Distillation in JAX with optax and ``kldiv.jax.make_train_step``, on scikit-learn's digits.

A softmax-regression teacher is trained on the labels (optax cross-entropy); a student with a
smaller input (every other pixel) then learns from the teacher's logits alone, with the jitted train
step that ``kldiv.jax.make_train_step`` builds: ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``.

    python examples/jax_optax_train_step.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kldiv.jax


def linear(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ params["w"] + params["b"]


def init(n_in: int, n_out: int = 10) -> dict[str, jax.Array]:
    return {"w": jnp.zeros((n_in, n_out)), "b": jnp.zeros(n_out)}


def main() -> dict[str, float]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    x_train, x_test = jnp.asarray(x_train), jnp.asarray(x_test)

    # Teacher: softmax regression on all 64 pixels, trained on the labels.
    teacher, optimizer = init(64), optax.adam(0.1)
    state = optimizer.init(teacher)

    @jax.jit
    def teacher_step(params: dict, state: optax.OptState) -> tuple[dict, optax.OptState]:
        grads = jax.grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(linear(p, x_train), y_train).mean()
        )(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(200):
        teacher, state = teacher_step(teacher, state)
    teacher_logits = linear(teacher, x_train)

    # Student: every other pixel, trained on the teacher's logits with kldiv's train step.
    student, student_optimizer = init(32), optax.adam(0.1)
    step = kldiv.jax.make_train_step(
        linear,
        student_optimizer,
        reduction="batchmean",
        y_true_format="logits",
        from_logits=True,
        temperature=2.0,
        scale_by_temperature_squared=True,
    )
    student_state = student_optimizer.init(student)
    losses = []
    for _ in range(200):
        student, student_state, loss = step(student, student_state, x_train[:, ::2], teacher_logits)
        losses.append(float(loss))

    result = {
        "teacher_accuracy": float((linear(teacher, x_test).argmax(-1) == y_test).mean()),
        "student_accuracy": float((linear(student, x_test[:, ::2]).argmax(-1) == y_test).mean()),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    print(", ".join(f"{key}={value:.4f}" for key, value in result.items()))
    assert result["last_loss"] < result["first_loss"] / 4 and result["student_accuracy"] > 0.85, result
    return result


if __name__ == "__main__":
    main()
