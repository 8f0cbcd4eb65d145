"""Keras 3 ``fit`` with ``kldiv.keras.KLDivergence`` on any backend, then save and load the model.

A softmax-regression student learns the soft targets of a fixed teacher (temperature-softened
probabilities) on scikit-learn's digits; the loss is ``kldiv.keras.KLDivergence`` with its defaults,
i.e. exactly ``keras.losses.KLDivergence``. ``import kldiv.keras`` registers the loss, so the saved
``.keras`` file loads again without ``custom_objects``.

    python examples/keras_fit.py --backend jax        # or tensorflow, torch
"""

from __future__ import annotations

import argparse
import os
import tempfile


def main(backend: str) -> dict[str, float]:
    os.environ["KERAS_BACKEND"] = backend  # must be set before Keras is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    import kldiv.keras

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    onehot = np.eye(10, dtype="float32")[digits.target]
    soft_targets = (0.9 * onehot + 0.1 / 10).astype("float32")  # a teacher's softened probabilities

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=kldiv.keras.KLDivergence())
    history = model.fit(x, soft_targets, batch_size=128, epochs=5, verbose=0)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "student.keras")
        model.save(path)
        loaded = keras.models.load_model(path)  # no custom_objects: kldiv.keras registered the loss
    result = {
        "first_loss": history.history["loss"][0],
        "last_loss": history.history["loss"][-1],
        "loaded_loss": float(loaded.evaluate(x, soft_targets, verbose=0)),
        "accuracy": float((model.predict(x, verbose=0).argmax(-1) == digits.target).mean()),
    }
    print(f"backend={keras.backend.backend()}, " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    assert type(loaded.loss) is kldiv.keras.KLDivergence
    assert result["last_loss"] < result["first_loss"] and result["accuracy"] > 0.85, result
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow")
    main(parser.parse_args().backend)
