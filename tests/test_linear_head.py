"""Feature extraction's default head: a logistic regression fit by L-BFGS, its L2 strength picked on validation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import pipeline

from nlp_transfer import TrainConfig, train
from nlp_transfer.errors import UserInputError
from nlp_transfer.evaluation import evaluate_model
from nlp_transfer.features import FeatureHead
from nlp_transfer.linear_head import C_GRID, HEAD_C, fit_on_features, logistic_regression
from nlp_transfer.metrics import compute_report
from nlp_transfer.modeling import load_for_training

from conftest import synthetic_rows

ONE_PROCESS = SimpleNamespace(num_processes=1)


def _blobs(n: int, seed: int, classes: int = 3, size: int = 16, noise: float = 1.5):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, size, generator=torch.Generator().manual_seed(0)) * 2
    labels = torch.arange(n) % classes
    return centres[labels] + noise * torch.randn(n, size, generator=generator), labels


def test_logistic_regression_is_scikit_learns_at_the_same_c():
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs(240, seed=1)
    for c in (0.3, 10.0):
        weight, bias, fit = logistic_regression(x, y, 3, c)
        reference = linear_model.LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(x.double().numpy(), y.numpy())
        assert fit.converged
        # The same strictly convex objective (up to a constant factor), so the same optimum: ours is at least as
        # low as scikit-learn's, and the two give the same probabilities within the solvers' stopping tolerances.
        def objective(w, b):
            return float(torch.nn.functional.cross_entropy(x.double() @ w.T + b, y) + w.pow(2).sum() / (2 * c * len(x)))
        theirs_w, theirs_b = torch.from_numpy(reference.coef_), torch.from_numpy(reference.intercept_)
        assert objective(weight, bias) <= objective(theirs_w, theirs_b) + 1e-9
        ours = torch.softmax(x.double() @ weight.T + bias, -1)
        assert torch.allclose(ours, torch.from_numpy(reference.predict_proba(x.double().numpy())), atol=1e-3)


def _head(tiny_model_dir: str) -> FeatureHead:
    torch.manual_seed(0)
    return FeatureHead(load_for_training(tiny_model_dir, ["a", "b", "c"]))


def test_the_head_keeps_the_c_with_the_best_cross_validation_and_validation_score(tiny_model_dir):
    head = _head(tiny_model_dir)
    size = head.classifier_model.config.hidden_size
    train_rows, validation = _blobs(150, seed=2, size=size, noise=4.0), _blobs(90, seed=3, size=size, noise=4.0)

    def accuracy(predicted, true):
        return compute_report(predicted, true, ["a", "b", "c"])["accuracy"]

    record = fit_on_features(head, train_rows, validation, 3, accuracy, ONE_PROCESS)
    assert [t["c"] for t in record["grid"]] == list(C_GRID) and record["cv_folds"] == 5
    for t in record["grid"]:  # each C's score weighs its 5-fold score on 150 rows and its validation score on 90
        assert t["score"] == pytest.approx((150 * t["cv_score"] + 90 * t["validation_score"]) / 240)
    scores = [t["score"] for t in record["grid"]]
    assert len(set(scores)) > 1  # the strength matters on noisy data, so the choice is a real one
    chosen = scores.index(max(scores))  # the first best: the strongest penalty among equals
    assert record["c"] == C_GRID[chosen] and record["converged"]
    # The classifier now is the fit on the training rows at that C: it scores the recorded validation value.
    head.eval()
    with torch.no_grad():
        predicted = head(validation[0]).logits.argmax(-1)
    assert accuracy(predicted.tolist(), validation[1].tolist()) == pytest.approx(record["grid"][chosen]["validation_score"])
    # Cross-validation alone picks C when there are no validation rows.
    alone = fit_on_features(_head(tiny_model_dir), train_rows, None, 3, accuracy, ONE_PROCESS)
    assert all(t["validation_score"] is None and t["score"] == t["cv_score"] for t in alone["grid"])


def test_with_too_few_rows_to_pick_the_head_is_fit_at_the_default_strength(tiny_model_dir):
    head = _head(tiny_model_dir)
    rows = _blobs(9, seed=4, size=head.classifier_model.config.hidden_size)  # under 2 rows per fold
    record = fit_on_features(head, rows, None, 3, lambda p, t: 0.0, ONE_PROCESS)
    assert record["c"] == HEAD_C and record["cv_folds"] == 0
    assert record["grid"] == [{"c": HEAD_C, "cv_score": None, "validation_score": None, "score": None}]


def test_lbfgs_feature_extraction_run_saves_a_folder_pipeline_reproduces(tiny_config, tmp_path):
    config = tiny_config(strategy="feature-extraction", pooling="mean", feature_cache_dir=str(tmp_path / "cache"))
    assert (config.head_solver, config.epochs) == ("lbfgs", 1)
    result = train(config)
    history = result.summary["history"]
    assert len(history) == 1
    fit = history[0]["strategy"]["head_fit"]
    assert fit["solver"] == "lbfgs" and fit["converged"] and fit["c"] in C_GRID
    assert history[0]["train_loss"] == pytest.approx(fit["train_loss"]) and fit["train_loss"] > 0
    assert result.metrics["test"]["accuracy"] > 0.75  # keyword sentiment through the tiny encoder's mean
    out = Path(result.output_dir)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    clf = pipeline("text-classification", model=str(out), device="cpu")
    rows = synthetic_rows(80, seed=3)  # the tiny_config test file
    predicted = [p["label"] for p in clf([t for t, _ in rows], truncation=True, batch_size=16)]
    labels = sorted({label for _, label in rows})
    from_pipeline = compute_report([labels.index(p) for p in predicted], [labels.index(l) for _, l in rows], labels)
    assert evaluate_model(str(out), config.test_file) == from_pipeline == result.metrics["test"]
    assert "L-BFGS" in (out / "README.md").read_text()


def test_lbfgs_is_refused_for_heads_that_are_not_single_label():
    with pytest.raises(UserInputError, match="--head-solver lbfgs fits a single-label logistic regression"):
        TrainConfig(train_file="t.csv", strategy="feature-extraction", task="regression", head_solver="lbfgs")
    with pytest.raises(UserInputError, match="--head-solver does not apply to --strategy finetune"):
        TrainConfig(train_file="t.csv", head_solver="lbfgs")
