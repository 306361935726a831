"""A small trained classifier for the deploy tests (ONNX export and serving), trained in seconds."""

from __future__ import annotations

from pathlib import Path

from conftest import synthetic_rows, write_csv

LABELS = ("neg", "neutral", "pos")


def train_tiny_classifier(tiny_model_dir: str, root: Path) -> tuple[str, Path]:
    """Train the tiny BERT on 3-label keyword data; return the model folder and a labelled test CSV."""
    from nlp_transfer import TrainConfig, train

    test_csv = write_csv(root / "test.csv", synthetic_rows(90, seed=3, labels=LABELS))
    config = TrainConfig(
        train_file=str(write_csv(root / "train.csv", synthetic_rows(360, seed=1, labels=LABELS))),
        model=tiny_model_dir, output_dir=str(root / "model"), epochs=4, batch_size=16,
        learning_rate=3e-3, max_length=24, seed=7,
    )
    return train(config).output_dir, test_csv
