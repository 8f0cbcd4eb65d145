"""Knowledge distillation in PyTorch with ``kldiv.torch``: a teacher MLP → a linear student, on the
handwritten digits that ship with scikit-learn (``sklearn.datasets.load_digits``, no download).

The student minimises Hinton et al.'s loss: ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``
(``reduction="batchmean"``, PyTorch's per-sample mean) plus the cross-entropy on the labels.

    python examples/torch_distillation.py
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kldiv.torch

TEMPERATURE = 4.0
ALPHA = 0.7  # weight of the distillation term


def data() -> tuple[torch.Tensor, ...]:
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_train, x_test, y_train, y_test


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def train(model: torch.nn.Module, loss_fn, x: torch.Tensor, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x))
        loss.backward()
        optimizer.step()


def main() -> dict[str, float]:
    torch.manual_seed(0)
    x_train, x_test, y_train, y_test = data()

    teacher = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    train(teacher, lambda logits: torch.nn.functional.cross_entropy(logits, y_train), x_train, 150, 1e-2)
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x_train)

    distill = kldiv.torch.KLDivergence(
        reduction="batchmean",
        y_true_format="logits",
        from_logits=True,
        temperature=TEMPERATURE,
        scale_by_temperature_squared=True,
    )

    def student_loss(student_logits: torch.Tensor) -> torch.Tensor:
        hard = torch.nn.functional.cross_entropy(student_logits, y_train)
        return ALPHA * distill(teacher_logits, student_logits) + (1 - ALPHA) * hard

    student = torch.nn.Linear(64, 10)
    train(student, student_loss, x_train, 150, 5e-2)
    result = {
        "teacher_accuracy": accuracy(teacher, x_test, y_test),
        "student_accuracy": accuracy(student, x_test, y_test),
        "final_kl": distill(teacher_logits, student(x_train)).item(),
    }
    print(", ".join(f"{key}={value:.4f}" for key, value in result.items()))
    assert result["teacher_accuracy"] > 0.9 and result["student_accuracy"] > 0.85, result
    return result


if __name__ == "__main__":
    main()
