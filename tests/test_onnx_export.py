"""nlp-transfer export --format onnx: round trip, the ONNX backend of predict/evaluate, the self-check, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install 'nlp-transfer[onnx]'")
pytest.importorskip("onnxscript", reason="the ONNX extra is not installed: pip install 'nlp-transfer[onnx]'")

from nlp_transfer import ExportOptions, UserInputError, export_onnx, load_classifier
from nlp_transfer.cli import main
from nlp_transfer.evaluation import evaluate_model

from conftest import requires_shared_data, synthetic_rows
from deploy_models import LABELS, train_tiny_classifier

ODD_TEXTS = ["", "   ", "Très bon film, vraiment génial!", "good " * 300, "awful plot and sad actors", "x"]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> tuple[str, Path]:
    return train_tiny_classifier(tiny_model_dir, tmp_path_factory.mktemp("onnx-source"))


@pytest.fixture(scope="module")
def fp32_dir(trained, tmp_path_factory) -> str:
    model_dir, _ = trained
    out = tmp_path_factory.mktemp("exports") / "fp32"
    assert main(["-q", "export", model_dir, "--format", "onnx", "--output-dir", str(out)]) == 0
    return str(out)


def _texts() -> list[str]:
    return [text for text, _ in synthetic_rows(70, seed=11, labels=LABELS)] + ODD_TEXTS


def test_fp32_round_trip_equals_pytorch(trained, fp32_dir):
    model_dir, _ = trained
    torch_clf, onnx_clf = load_classifier(model_dir, device="cpu"), load_classifier(fp32_dir)
    assert type(onnx_clf.model).__name__ == "OnnxSequenceClassifier"  # detected from the folder
    assert (onnx_clf.labels, onnx_clf.max_length, onnx_clf.text_column) == (list(LABELS), 24, "text")
    texts = _texts()
    expected, got = torch_clf.predict_proba(texts), onnx_clf.predict_proba(texts, batch_size=7)
    assert (expected.argmax(1) == got.argmax(1)).all()
    assert np.abs(expected - got).max() < 1e-5
    for want, have in zip(torch_clf.predict(texts, top_k=2), onnx_clf.predict(texts, top_k=2)):
        assert [p["label"] for p in want] == [p["label"] for p in have]
        assert [p["score"] for p in want] == pytest.approx([p["score"] for p in have], abs=1e-5)


def test_export_folder_carries_tokenizer_labels_settings_and_card(trained, fp32_dir):
    model_dir, _ = trained
    names = {p.name for p in Path(fp32_dir).iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "training_config.json", "metrics.json", "README.md",
            "onnx_export.json"} <= names
    assert not any(n.endswith((".safetensors", ".bin")) or n.startswith(".") for n in names)
    # Settings files travel byte for byte, whatever their name (thresholds, long-text settings of later features).
    for name in names - {"model.onnx", "README.md", "onnx_export.json"}:
        assert (Path(fp32_dir) / name).read_bytes() == (Path(model_dir) / name).read_bytes(), name
    record = json.loads((Path(fp32_dir) / "onnx_export.json").read_text())
    assert record["check"]["label_agreement"] == 1.0 and record["check"]["max_abs_probability_difference"] < 1e-4
    card = (Path(fp32_dir) / "README.md").read_text()
    original = (Path(model_dir) / "README.md").read_text()
    metadata = original[:original.index("\n---\n", 4) + 5]
    assert card.startswith(metadata) and card.index("## ONNX export") < card.index(original[len(metadata):].strip()[:40])
    assert not any(Path(fp32_dir).parent.glob(".*incomplete*"))


def test_exported_folder_runs_without_nlp_transfer(trained, fp32_dir):
    """Only onnxruntime, the tokenizer and config.json: what another runtime or service would use."""
    texts = _texts()[:20]
    script = (
        "import json, sys\n"
        "sys.modules['nlp_transfer'] = None  # not importable: the folder must stand alone\n"
        "import numpy as np, onnxruntime as ort\n"
        "from transformers import AutoTokenizer\n"
        "folder, texts = sys.argv[1], json.loads(sys.argv[2])\n"
        "tok = AutoTokenizer.from_pretrained(folder)\n"
        "session = ort.InferenceSession(folder + '/model.onnx')\n"
        "enc = tok(texts, truncation=True, padding=True, return_tensors='np')\n"
        "logits = session.run(['logits'], {i.name: enc[i.name].astype('int64') for i in session.get_inputs()})[0]\n"
        "id2label = json.load(open(folder + '/config.json'))['id2label']\n"
        "print(json.dumps([id2label[str(i)] for i in logits.argmax(1)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, fp32_dir, json.dumps(texts)], capture_output=True, text=True,
                         check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    expected = [p["label"] for p in load_classifier(trained[0], device="cpu").predict(texts)]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected


def test_predict_and_evaluate_through_the_onnx_folder(trained, fp32_dir, tmp_path):
    model_dir, test_csv = trained
    for folder, name in ((model_dir, "torch.csv"), (fp32_dir, "onnx.csv")):
        assert main(["-q", "predict", folder, str(test_csv), "--output", str(tmp_path / name), "--top-k", "2"]) == 0
    read = lambda name: list(csv.DictReader((tmp_path / name).open(encoding="utf-8")))  # noqa: E731
    torch_rows, onnx_rows = read("torch.csv"), read("onnx.csv")
    assert [r["predicted_label"] for r in torch_rows] == [r["predicted_label"] for r in onnx_rows]
    assert max(abs(float(a["score"]) - float(b["score"])) for a, b in zip(torch_rows, onnx_rows)) < 1e-5

    torch_report = evaluate_model(model_dir, str(test_csv))
    onnx_report = evaluate_model(fp32_dir, str(test_csv), backend="onnx")
    assert onnx_report["accuracy"] == torch_report["accuracy"] > 0.5  # majority is 1/3
    assert main(["-q", "evaluate", fp32_dir, str(test_csv), "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == torch_report["accuracy"]


def test_int8_and_o2_report_agreement_and_accuracy_on_the_check_file(trained, tmp_path):
    model_dir, test_csv = trained
    result = export_onnx(model_dir, str(tmp_path / "int8"),
                         ExportOptions(quantize="int8", optimize="O2", check_file=str(test_csv)))
    check = result["check"]
    assert check["compared"] == 90 and check["tolerance"] is None
    assert check["label_agreement"] >= 0.9 and check["accuracy_onnx"] > 0.5
    assert check["accuracy_change"] == pytest.approx(check["accuracy_onnx"] - check["accuracy_pytorch"], abs=1e-4)
    assert [s.split()[0] for s in result["steps"]] == ["export", "optimize", "quantize"]
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < 0.5 * (Path(model_dir) / "model.safetensors").stat().st_size
    report = evaluate_model(str(tmp_path / "int8"), str(test_csv))
    assert report["accuracy"] == pytest.approx(check["accuracy_onnx"], abs=1e-4)


def test_a_failed_check_refuses_and_writes_nothing(trained, tmp_path, capsys):
    model_dir, _ = trained
    # O2's fused kernels round differently from PyTorch: far beyond a tolerance of 1e-15.
    code = main(["-q", "export", model_dir, "--format", "onnx", "--optimize", "O2", "--tolerance", "1e-15",
                 "--sample-size", "32", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "does not match PyTorch" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_an_int8_export_under_min_agreement_is_refused(trained, tmp_path, capsys):
    model_dir, _ = trained
    code = main(["-q", "export", model_dir, "--format", "onnx", "--quantize", "int8", "--min-agreement", "1.01",
                 "--output-dir", str(tmp_path / "out")])
    assert code == 2 and "--min-agreement" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--output-dir", "{model}/onnx"], "inside it"),
    (["--output-dir", "{model}"], "inside it"),
    (["--output-dir", "{tmp}/o", "--check-file", "{tmp}/missing.csv"], "missing.csv"),
    (["--output-dir", "{tmp}/o", "--optimize", "O9"], "invalid choice"),
])
def test_bad_export_requests_exit_2(trained, tmp_path, capsys, args, message):
    model_dir, _ = trained
    argv = [a.format(model=model_dir, tmp=tmp_path) for a in args]
    assert main(["-q", "export", model_dir, "--format", "onnx", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (Path(model_dir) / "onnx").exists()


def test_backend_mismatches_are_refused(trained, fp32_dir):
    model_dir, _ = trained
    with pytest.raises(UserInputError, match="--backend onnx needs a folder with model.onnx"):
        load_classifier(model_dir, backend="onnx")
    with pytest.raises(UserInputError, match="quantize an ONNX model when exporting"):
        load_classifier(fp32_dir, quantize="int8")
    with pytest.raises(UserInputError, match="already an ONNX export"):
        export_onnx(fp32_dir, str(Path(fp32_dir).parent / "again"))


def test_export_onnx_from_the_package_root_writes_checks_and_never_replaces_silently(trained, tmp_path):
    import nlp_transfer
    from nlp_transfer import onnx_export

    assert nlp_transfer.export_onnx is onnx_export.export_onnx and "export_onnx" in nlp_transfer.__all__
    model_dir, _ = trained
    target = tmp_path / "api-export"
    record = nlp_transfer.export_onnx(model_dir, str(target), nlp_transfer.ExportOptions(sample_size=16))
    assert record["output_dir"] == str(target) and record["quantize"] is None
    assert record["check"]["compared"] == 16 and record["check"]["label_agreement"] == 1.0
    saved = json.loads((target / "onnx_export.json").read_text())
    assert saved == {k: v for k, v in record.items() if k != "output_dir"}
    texts = _texts()
    assert [p["label"] for p in load_classifier(str(target)).predict(texts)] == \
        [p["label"] for p in load_classifier(model_dir, device="cpu").predict(texts)]

    written = (target / "model.onnx").stat().st_mtime_ns
    with pytest.raises(UserInputError, match="already holds a model; pass --overwrite"):
        nlp_transfer.export_onnx(model_dir, str(target), nlp_transfer.ExportOptions(quantize="int8"))
    assert (target / "model.onnx").stat().st_mtime_ns == written
    replaced = nlp_transfer.export_onnx(model_dir, str(target), ExportOptions(quantize="int8", overwrite=True))
    assert replaced["quantize"] == "int8" and json.loads((target / "onnx_export.json").read_text())["quantize"] == "int8"
    with pytest.raises(UserInputError, match="--quantize 'int4' is unknown"):
        ExportOptions(quantize="int4")


def test_export_onnx_without_the_extra_is_one_clear_error_and_the_import_stays_cheap(trained, tmp_path):
    script = (
        "import json, sys\n"
        "sys.modules['onnxruntime'] = None  # the onnx extra is not installed\n"
        "import nlp_transfer\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]\n"
        "from nlp_transfer import UserInputError, export_onnx\n"
        "try:\n"
        "    export_onnx(sys.argv[1], sys.argv[2])\n"
        "except UserInputError as err:\n"
        "    print(json.dumps([heavy, str(err)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, trained[0], str(tmp_path / "o")], capture_output=True,
                         text=True, check=True)
    heavy, message = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert message == ("nlp-transfer export --format onnx needs the optional package(s) onnxruntime, which are not "
                       "installed; install them with: pip install 'nlp-transfer[onnx]'")
    assert not (tmp_path / "o").exists()


OPTIMUM_PYTHON = os.environ.get("NLP_TRANSFER_OPTIMUM_PYTHON")
_OPTIMUM_SCRIPT = (
    "import json, sys\n"
    "sys.modules['nlp_transfer'] = None  # the folder must stand alone\n"
    "from optimum.onnxruntime import ORTModelForSequenceClassification\n"
    "from transformers import AutoTokenizer, pipeline\n"
    "folder, texts = sys.argv[1], json.loads(sys.argv[2])\n"
    "model = ORTModelForSequenceClassification.from_pretrained(folder)\n"
    "clf = pipeline('text-classification', model=model, tokenizer=AutoTokenizer.from_pretrained(folder), top_k=None)\n"
    "print(json.dumps(clf(texts, truncation=True)))\n"
)


@pytest.mark.skipif(not OPTIMUM_PYTHON, reason="optimum-onnx (0.1.0) needs transformers<4.58, so it lives in another "
                    "environment: set NLP_TRANSFER_OPTIMUM_PYTHON to that environment's python to run this test")
def test_optimum_ort_model_and_pipeline_load_the_export(trained, fp32_dir):
    """optimum's ORTModelForSequenceClassification in pipeline() answers as load_classifier, without nlp-transfer."""
    texts = _texts()
    out = subprocess.run([OPTIMUM_PYTHON, "-c", _OPTIMUM_SCRIPT, fp32_dir, json.dumps(texts)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": "", "TOKENIZERS_PARALLELISM": "false"})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want = load_classifier(trained[0], device="cpu").predict(texts, top_k=len(LABELS))
    assert [[p["label"] for p in row] for row in got] == [[p["label"] for p in row] for row in want]
    for row_got, row_want in zip(got, want):
        assert [p["score"] for p in row_got] == pytest.approx([p["score"] for p in row_want], abs=1e-5)


@pytest.mark.parametrize("command, module, extra", [
    (["export", "M", "--format", "onnx", "--output-dir", "O"], "onnxruntime", "onnx"),
    (["serve", "M"], "fastapi", "serve"),
])
def test_a_missing_extra_is_one_line_and_exit_2(command, module, extra):
    script = (f"import sys; sys.modules[{module!r}] = None\n"
              "from nlp_transfer.cli import main\n"
              f"sys.exit(main({command!r}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: nlp-transfer {command[0]}{' --format onnx' if extra == 'onnx' else ''} needs the optional package(s) "
        f"{module}, which are not installed; install them with: pip install 'nlp-transfer[{extra}]'"]


@pytest.mark.slow
@pytest.mark.integration
def test_real_fine_tuned_model_round_trip(tmp_path):
    """MiniLM fine-tuned on 400 rotten_tomatoes rows: the fp32 export scores 200 test rows as PyTorch does."""
    from nlp_transfer import TrainConfig, train

    data = requires_shared_data("rotten_tomatoes")
    test_csv = tmp_path / "test.csv"
    with (data / "test.csv").open(encoding="utf-8", newline="") as src:
        rows = list(csv.DictReader(src))
    rng = np.random.default_rng(0)  # both labels: the file is sorted by label
    with test_csv.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[i] for i in rng.choice(len(rows), 200, replace=False))
    model_dir = train(TrainConfig(train_file=str(data / "train.csv"), output_dir=str(tmp_path / "model"),
                                  max_train_samples=400, epochs=1, batch_size=16, max_length=48, learning_rate=2e-4,
                                  seed=13)).output_dir
    check = export_onnx(model_dir, str(tmp_path / "fp32"), ExportOptions(check_file=str(test_csv)))["check"]
    assert check["compared"] == 200 and check["label_agreement"] == 1.0
    assert check["max_abs_probability_difference"] < 1e-4
    assert check["accuracy_onnx"] == check["accuracy_pytorch"] > 0.6
    assert evaluate_model(str(tmp_path / "fp32"), str(test_csv))["accuracy"] == pytest.approx(check["accuracy_onnx"], abs=1e-4)
