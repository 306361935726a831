"""load_classifier and nlp-transfer predict: pipeline parity, order, top-k, streaming, bad input."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import pipeline

from nlp_transfer import TrainConfig, UserInputError, load_classifier, train
from nlp_transfer.cli import main
from nlp_transfer.inference import predict_csv

from conftest import requires_shared_data, synthetic_rows, write_csv

LABELS = ("neg", "neutral", "pos")
# Empty, blank, accented, very long (truncated at max_length) and ordinary texts.
ODD_TEXTS = ["", "   ", "Très bon film, vraiment génial!", "good " * 300, "awful plot and sad actors", "x"]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A tiny 3-label classifier trained for one epoch (its quality does not matter here)."""
    root = tmp_path_factory.mktemp("inference")
    config = TrainConfig(
        train_file=str(write_csv(root / "train.csv", synthetic_rows(120, seed=1, labels=LABELS))),
        model=tiny_model_dir, output_dir=str(root / "model"), epochs=1, batch_size=16,
        learning_rate=2e-3, max_length=24, seed=7,
    )
    return train(config).output_dir


@pytest.fixture(scope="module")
def clf(model_dir):
    return load_classifier(model_dir, device="cpu")


def _texts(n: int, seed: int = 5) -> list[str]:
    return [text for text, _ in synthetic_rows(n, seed=seed, labels=LABELS)] + ODD_TEXTS


def assert_matches_pipeline(model_dir: str, predictions: list[dict], texts: list, batch_size: int = 16) -> None:
    reference = pipeline("text-classification", model=model_dir, device="cpu")(texts, truncation=True, batch_size=batch_size)
    assert [p["label"] for p in predictions] == [r["label"] for r in reference]
    diff = max(abs(p["score"] - r["score"]) for p, r in zip(predictions, reference))
    assert diff < 1e-5, diff


def test_saved_preprocessing_is_applied(clf):
    assert clf.labels == list(LABELS)
    assert clf.max_length == 24 and clf.text_column == "text" and clf.text_pair_column is None


def test_predictions_equal_pipeline(model_dir, clf):
    texts = _texts(150)
    assert_matches_pipeline(model_dir, clf.predict(texts, batch_size=16), texts)


def test_order_and_batch_size_do_not_change_results(clf):
    texts = _texts(100)
    probs = clf.predict_proba(texts, batch_size=64)
    assert probs.shape == (len(texts), 3)
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = clf.predict_proba([texts[i] for i in perm], batch_size=7)
    np.testing.assert_allclose(shuffled, probs[perm], atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(texts[::-1], batch_size=1)[::-1], probs, atol=1e-6)


def test_top_k_is_sorted_and_sums_to_one(model_dir, clf):
    texts = _texts(40)
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    top = clf.predict(texts, top_k=5)  # more than the 3 labels: capped
    top1 = clf.predict(texts)
    for row, best, p in zip(top, top1, probs):
        scores = [d["score"] for d in row]
        assert [d["label"] for d in row] != [] and len(row) == 3
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert row[0] == best
        assert {d["label"]: d["score"] for d in row} == pytest.approx(dict(zip(clf.labels, p.tolist())))
    two = clf.predict(texts, top_k=2)
    assert [row[:2] for row in top] == two
    reference = pipeline("text-classification", model=model_dir, device="cpu")(texts, truncation=True, top_k=None)
    assert [[d["label"] for d in row] for row in reference] == [[d["label"] for d in row] for row in top]


def test_empty_inputs(clf):
    assert clf.predict([]) == []
    assert clf.predict_proba([]).shape == (0, 3)
    assert clf.predict("")[0]["label"] in LABELS  # a single string is one text


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.predict(["ok", None]), r"texts\[1\] is NoneType \(None\), not a string"),
        (lambda c: c.predict(["a", "b"], text_pairs=["c"]), "got 2 texts but 1 text_pairs"),
        (lambda c: c.predict(["a"], top_k=0), "top_k must be a positive integer"),
        (lambda c: c.predict_proba(["a"], batch_size=0), "batch_size must be a positive integer"),
    ],
)
def test_bad_calls_are_refused(clf, call, message):
    with pytest.raises(UserInputError, match=message):
        call(clf)


def test_loading_refuses_what_is_not_a_classifier(tiny_model_dir, model_dir, tmp_path):
    with pytest.raises(UserInputError, match="is not a text classifier .*BertModel"):
        load_classifier(tiny_model_dir)
    with pytest.raises(UserInputError, match="not a loadable Hugging Face model"):
        load_classifier(tmp_path)
    with pytest.raises(UserInputError, match="quantize 'int4' is unknown; choose int8"):
        load_classifier(model_dir, quantize="int4")
    with pytest.raises(UserInputError, match="runs on the CPU only"):
        load_classifier(model_dir, device="meta", quantize="int8")


def test_int8_quantization_predicts_close_to_float(model_dir, clf):
    texts = _texts(60)
    quantized = load_classifier(model_dir, quantize="int8")
    assert quantized.labels == clf.labels
    assert np.abs(quantized.predict_proba(texts) - clf.predict_proba(texts)).max() < 0.1


def test_pair_model_uses_the_saved_pair_column(tiny_model_dir, tmp_path):
    rows = [(text, text[::-1], label) for text, label in synthetic_rows(80, seed=2)]
    train_csv = write_csv(tmp_path / "pairs.csv", rows, header=("premise", "hypothesis", "label"))
    out = train(TrainConfig(train_file=str(train_csv), text_column="premise", text_pair_column="hypothesis",
                            model=tiny_model_dir, output_dir=str(tmp_path / "pair-model"), epochs=1, max_length=24)).output_dir
    pair_clf = load_classifier(out)
    assert (pair_clf.text_column, pair_clf.text_pair_column) == ("premise", "hypothesis")
    premises, hypotheses = [r[0] for r in rows], [r[1] for r in rows]
    predictions = pair_clf.predict(premises, text_pairs=hypotheses)
    assert_matches_pipeline(out, predictions, [{"text": a, "text_pair": b} for a, b in zip(premises, hypotheses)])

    predict_csv(out, str(train_csv), str(tmp_path / "pred.csv"), progress=False)
    with (tmp_path / "pred.csv").open(encoding="utf-8") as fh:
        assert [r["predicted_label"] for r in csv.DictReader(fh)] == [p["label"] for p in predictions]


# ---- nlp-transfer predict ---------------------------------------------------------------------


def _input_csv(path: Path, n: int, seed: int = 3) -> Path:
    rows = [(f"id-{i}", text, label) for i, (text, label) in enumerate(synthetic_rows(n, seed=seed, labels=LABELS))]
    rows += [(f"id-{n + i}", text, "") for i, text in enumerate(ODD_TEXTS)]
    return write_csv(path, rows, header=("id", "text", "label"))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_csv_keeps_rows_columns_and_order(clf, model_dir, tmp_path):
    source = _input_csv(tmp_path / "in.csv", 90)
    out = tmp_path / "out" / "pred.csv"
    summary = predict_csv(model_dir, str(source), str(out), top_k=2, chunk_size=16, batch_size=8, progress=False)
    assert summary["rows"] == 96 and summary["processes"] == 1
    rows, originals = _read(out), _read(source)
    assert list(rows[0]) == ["id", "text", "label", "predicted_label", "score", "label_1", "score_1", "label_2", "score_2"]
    assert [{k: r[k] for k in ("id", "text", "label")} for r in rows] == originals
    expected = clf.predict([r["text"] for r in originals], top_k=2)
    assert [[r["label_1"], r["label_2"]] for r in rows] == [[d["label"] for d in e] for e in expected]
    assert [r["predicted_label"] for r in rows] == [r["label_1"] for r in rows]
    assert np.allclose([float(r["score_2"]) for r in rows], [e[1]["score"] for e in expected], atol=1e-7)
    assert not list(out.parent.glob(".*incomplete*"))


def test_a_failure_midway_leaves_no_partial_output(model_dir, tmp_path):
    source = _input_csv(tmp_path / "in.csv", 60)
    with source.open("a", encoding="utf-8") as fh:
        fh.write("id-late,one,two,three\n")  # a ragged row after several chunks were written
    out = tmp_path / "pred.csv"
    out.write_text("old predictions\n")
    with pytest.raises(UserInputError, match=r"line 68 has 4 field\(s\) but the header has 3"):
        predict_csv(model_dir, str(source), str(out), chunk_size=10, progress=False)
    assert out.read_text() == "old predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "pred.csv"]


@pytest.mark.parametrize(
    "write_input, extra, message",
    [
        (lambda p: write_csv(p, [("a review", "x")], header=("review", "label")), [],
         r"column 'text' not found in input file .*; columns are: review, label. Pass the right name with --text-column"),
        (lambda p: p.write_bytes(b""), [], "input file .* is empty"),
        (lambda p: p.write_text("text,label\n"), [], "has a header but no data rows"),
        (lambda p: p.write_bytes("text\ncafé\n".encode("latin-1")), [], "is not valid UTF-8"),
        (lambda p: write_csv(p, [("ok",)], header=("text",)), ["--top-k", "0"], "--top-k must be a positive integer"),
        (lambda p: write_csv(p, [("ok",)], header=("text",)), ["--batch-size", "0"],
         "--batch-size must be a positive integer; got '0'"),
        (lambda p: write_csv(p, [("ok", "pos")], header=("text", "predicted_label")), [],
         "already has column\\(s\\) 'predicted_label', which predict adds"),
        (None, [], "INPUT_FILE"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(model_dir, tmp_path, capsys, write_input, extra, message):
    source = tmp_path / "in.csv"
    if write_input is not None:
        write_input(source)
    out = tmp_path / "pred.csv"
    code = main(["-q", "predict", model_dir, str(source), "--output", str(out), *extra])
    _assert_user_error(code, capsys.readouterr().err, message)
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_an_output_path_through_a_file_is_one_line(model_dir, tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv", [("ok",)], header=("text",))
    code = main(["-q", "predict", model_dir, str(source), "--output", str(source / "pred.csv")])
    _assert_user_error(code, capsys.readouterr().err, r"--output .*in.csv' is a file, not a folder; fix the path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("fault, message", [("full", "the disk is full"), ("read_only", "the file system is read-only")])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_nothing(model_dir, tmp_path, capsys, fault, message):
    from fs_faults import tmpfs

    source = _input_csv(tmp_path / "in.csv", 300)  # ~20 kB of predictions: more than any room left
    with tmpfs(tmp_path / "disk", **{fault: True}) as disk:
        before = sorted(p.name for p in disk.iterdir())
        code = main(["-q", "predict", model_dir, str(source), "--output", str(disk / "out" / "pred.csv")])
        _assert_user_error(code, capsys.readouterr().err, f"cannot write .*pred.csv': {message}; ")
        assert sorted(p.name for p in disk.iterdir()) == before, "no staging file or folder is left"


def test_the_output_cannot_replace_a_file_of_the_model(model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    before = (folder / "config.json").read_bytes()
    source = write_csv(tmp_path / "in.csv", [("ok",)], header=("text",))
    code = main(["-q", "predict", str(folder), str(source), "--output", str(folder / "config.json")])
    _assert_user_error(code, capsys.readouterr().err, r"--output .*config.json' is the input file")
    assert (folder / "config.json").read_bytes() == before


def test_a_damaged_saved_max_length_is_refused(model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    settings = json.loads((folder / "training_config.json").read_text())
    for value, message in ((1, "the saved max_length 1 leaves no room for text"), ("24", "is '24', not a number of tokens")):
        settings["max_length"] = value
        (folder / "training_config.json").write_text(json.dumps(settings))
        with pytest.raises(UserInputError, match=message):
            load_classifier(folder)


def test_a_folder_that_is_not_a_classifier_exits_2(tiny_model_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", [("ok",)], header=("text",))
    proc = subprocess.run([sys.executable, "-m", "nlp_transfer.cli", "predict", tiny_model_dir, str(source),
                           "--output", str(tmp_path / "pred.csv")], capture_output=True, text=True)
    _assert_user_error(proc.returncode, proc.stderr, "is not a text classifier")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pred.csv").exists()


def _assert_user_error(code: int, stderr: str, message: str) -> None:
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), stderr


_PEAK_RSS = (
    "import resource, sys\n"
    "from nlp_transfer.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _peak_rss_mb(*args: str) -> float:
    # One thread: the measurement is about memory, and the CPU is shared with other test runs.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.split("PEAK_RSS_KB")[-1].split()[0]) / 1024


def test_streaming_memory_does_not_grow_with_the_file(model_dir, tmp_path):
    # Each row carries a 4 kB note column: 10k rows are 40 MB of text that must never be held at once.
    rng = random.Random(0)
    note = "".join(rng.choice("abcdefgh ") for _ in range(4000))
    base = synthetic_rows(50, seed=9, labels=LABELS)
    sizes = {}
    for n in (1_000, 10_000):
        path = write_csv(tmp_path / f"in-{n}.csv", ((base[i % 50][0], note) for i in range(n)), header=("text", "note"))
        out = tmp_path / f"pred-{n}.csv"
        sizes[n] = _peak_rss_mb("-q", "predict", model_dir, str(path), "--output", str(out), "--batch-size", "256")
        assert sum(1 for _ in out.open(encoding="utf-8")) == n + 1
    assert sizes[10_000] - sizes[1_000] < 25, sizes


def test_two_processes_write_one_complete_file_in_order(model_dir, tmp_path):
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate launch is not on PATH")
    source = _input_csv(tmp_path / "in.csv", 300)
    out = tmp_path / "pred.csv"
    # --multi_gpu is accelerate's torchrun launcher; with no GPU the processes join over gloo on the CPU
    # (accelerate 1.x runs `--cpu --num_processes N` as a single process unless mpirun is configured).
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "nlp_transfer.cli", "-q", "predict", model_dir, str(source),
           "--output", str(out), "--batch-size", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "predict" not in proc.stderr:
        pytest.skip(f"accelerate launch cannot start 2 processes here: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["processes"] == 2 and summary["rows"] == 306
    single = tmp_path / "single.csv"
    predict_csv(model_dir, str(source), str(single), batch_size=16, progress=False)
    multi, one = _read(out), _read(single)
    assert [r["id"] for r in multi] == [r["id"] for r in one] == [r["id"] for r in _read(source)]
    assert [r["predicted_label"] for r in multi] == [r["predicted_label"] for r in one]
    assert np.allclose([float(r["score"]) for r in multi], [float(r["score"]) for r in one], atol=1e-6)


@pytest.mark.integration
def test_real_model_on_real_data_equals_pipeline(tmp_path):
    data = requires_shared_data("rotten_tomatoes")
    result = train(TrainConfig(
        train_file=str(data / "train.csv"), output_dir=str(tmp_path / "rt"), max_train_samples=200,
        epochs=1, batch_size=16, learning_rate=2e-4, max_length=64, seed=13,
    ))
    with (data / "test.csv").open(encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)][:300]
    predictions = load_classifier(result.output_dir).predict(texts, batch_size=64)
    assert_matches_pipeline(result.output_dir, predictions, texts, batch_size=64)
