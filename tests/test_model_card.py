"""The model card: template + ModelCardData, Hub-readable metadata, every section the issue lists."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from nlp_transfer import TrainConfig, train
from nlp_transfer.cli import build_parser, config_from_args, main
from nlp_transfer.config import DEFAULT_MODEL
from nlp_transfer.model_card import CARD_METRICS, render_card, train_command

from conftest import synthetic_rows, write_csv


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny model trained once for this module, with a test set and card metadata flags."""
    root = tmp_path_factory.mktemp("card-model")
    config = TrainConfig(
        train_file=str(write_csv(root / "train.csv", synthetic_rows(150, seed=1, labels=("neg", "neutral", "pos")))),
        test_file=str(write_csv(root / "test.csv", synthetic_rows(45, seed=3, labels=("neg", "neutral", "pos")))),
        model=tiny_model_dir, output_dir=str(root / "model"), epochs=1, batch_size=16, learning_rate=2e-3,
        max_length=32, seed=7, license="apache-2.0", language="en", dataset_name="tests/keyword-sentiment",
        small_data="off",  # 50 rows per class would train without a validation split; the card shows one here
    )
    return Path(train(config).output_dir)


def load(path: Path) -> tuple[ModelCard, dict, dict, dict]:
    read = lambda name: json.loads((path / name).read_text(encoding="utf-8"))  # noqa: E731
    return ModelCard.load(path / "README.md"), read("metrics.json"), read("training_summary.json"), read(
        "training_config.json"
    )


def test_card_metadata_is_what_the_hub_reads(model_dir):
    card, _, _, _ = load(model_dir)
    data = card.data.to_dict()

    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert data["license"] == "apache-2.0" and data["language"] == "en"
    assert data["datasets"] == ["tests/keyword-sentiment"]
    assert {"nlp-transfer", "finetune"} <= set(data["tags"])
    assert set(data["metrics"]) == {"accuracy", "f1", "precision", "recall"}
    assert "base_model" not in data  # a local encoder folder is no Hub id


def test_model_index_values_equal_metrics_json(model_dir):
    card, metrics, _, _ = load(model_dir)

    results = card.data.eval_results
    assert {r.metric_name for r in results} == set(CARD_METRICS)
    for result in results:
        assert result.dataset_split == "test" and result.task_type == "text-classification"
        assert result.metric_value == metrics["test"][result.metric_name]


def test_body_has_every_section_with_the_run_numbers(model_dir):
    card, metrics, summary, _ = load(model_dir)
    text = card.text

    for heading in ("## Labels", "## Results", "## How to use it", "## Training data", "## Training procedure",
                    "## Limitations"):
        assert heading in text, heading
    for split, counts in summary["label_counts"].items():  # rows per label per split
        for label, n in counts.items():
            assert label in text and f" {n} |" in text, (split, label)
    assert "| label | train | validation | test |" in text
    for label, row in metrics["test"]["per_class"].items():
        assert f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |" in text
    cm = metrics["test"]["confusion_matrix"]
    for label, row in zip(cm["labels"], cm["matrix"]):
        assert f"| **{label}** | " + " | ".join(str(n) for n in row) + " |" in text
    assert "| learning_rate | 0.002 |" in text and "full fine-tuning" in text
    assert f'pipeline("text-classification", model="{model_dir}")' in text
    assert f"```bash\n{summary['command']}\n```" in text
    assert "a local encoder" in text and "Texts are cut at 32 tokens" in text


def _copy_with(model_dir, tmp_path, json_file: str, **changes) -> Path:
    """A copy of the trained folder with ``changes`` set in one of its JSON files."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    values = json.loads((folder / json_file).read_text())
    values.update(changes)
    (folder / json_file).write_text(json.dumps(values))
    return folder


def test_card_for_a_repo_names_it_and_links_a_hub_base_model(model_dir, tmp_path):
    folder = _copy_with(model_dir, tmp_path, "training_config.json", model=DEFAULT_MODEL)

    card = render_card(folder, "my-org/sentiment-minilm")

    assert card.data.base_model == DEFAULT_MODEL and card.data.model_name == "sentiment-minilm"
    assert f"[`{DEFAULT_MODEL}`](https://huggingface.co/{DEFAULT_MODEL})" in card.text
    assert 'load_classifier("my-org/sentiment-minilm")' in card.text


def test_validation_results_are_reported_when_there_is_no_test_set(model_dir, tmp_path):
    folder = _copy_with(model_dir, tmp_path, "metrics.json", test=None)
    metrics = json.loads((folder / "metrics.json").read_text())

    card = render_card(folder)

    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}
    assert all(r.metric_value == metrics["validation"][r.metric_name] for r in card.data.eval_results)
    assert "so they are optimistic" in card.text


def test_reproduce_command_of_a_python_run_rebuilds_the_same_config(model_dir):
    _, _, summary, saved = load(model_dir)
    command = summary["command"]  # the run above was started from Python

    assert command.startswith("nlp-transfer train ")
    args = build_parser().parse_args(shlex.split(command)[1:])
    rebuilt = config_from_args(TrainConfig, args).to_dict()
    for name in ("output_dir",):  # not part of what the model is
        rebuilt.pop(name), saved.pop(name)
    assert rebuilt == saved
    assert train_command(saved) == command


def test_card_command_rerenders_readme_for_a_repo(model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)

    assert main(["card", str(folder), "--repo-id", "my-org/sentiment"]) == 0

    assert capsys.readouterr().out.strip() == str(folder / "README.md")
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "sentiment" and 'model="my-org/sentiment"' in card.text


def _with_labels(model_dir, tmp_path, labels: list[str]) -> Path:
    """A copy of the trained folder whose records describe a model with ``labels`` (as a run would write them)."""
    from nlp_transfer.metrics import compute_report

    n = len(labels)
    references = list(range(n)) * 2
    report = compute_report(references, references, labels)
    folder = _copy_with(model_dir, tmp_path, "metrics.json", validation=report, test=report)
    summary = json.loads((folder / "training_summary.json").read_text())
    summary.update(labels=labels, label_counts={"train": {label: 3 for label in labels},
                                                "validation": {label: 2 for label in labels}})
    (folder / "training_summary.json").write_text(json.dumps(summary))
    return folder


def test_labels_with_markdown_pipes_and_newlines_cannot_break_the_tables(model_dir, tmp_path):
    labels = ["a|b", "line\nbreak", "*bold*", "[link](x)"]
    text = render_card(_with_labels(model_dir, tmp_path, labels)).text
    assert r"| 0 | a\|b |" in text and "| 1 | line break |" in text and r"| 2 | \*bold\* |" in text
    assert r"\[link\](x)" in text
    label_table = text[text.index("| id | label |"):].split("\n\n")[0].splitlines()
    assert len(label_table) == 2 + len(labels)  # a label with a newline is still one row
    for line in label_table:  # two cells per row: no unescaped pipe from a label
        assert line.replace(r"\|", "").count("|") == 3, line


def test_thousands_of_labels_give_a_card_of_readable_size(model_dir, tmp_path):
    labels = [f"label-{i:04d}" for i in range(3000)]
    card = str(render_card(_with_labels(model_dir, tmp_path, labels)))
    assert len(card.encode()) < 60_000
    assert "… and 2950 more labels" in card and "label-0049" in card and "label-2999" not in card
    assert "is in metrics.json" in card  # no 3000 × 3000 confusion matrix


def test_card_tables_have_no_trailing_spaces_and_speed_switches_are_training_details(model_dir):
    text = (model_dir / "README.md").read_text()
    assert not [line for line in text.splitlines() if line != line.rstrip()]
    hyper = text[text.index("| hyperparameter | value |"):].split("\n\n")[0]
    for switch in ("fast_cpu_dropout", "cls_only_last_layer", "compact_embeddings", "group_by_length"):
        assert switch not in hyper
    assert "Training details that change the speed, not what is learned" in text


def test_dataset_metadata_is_derived_from_the_file_when_not_named(model_dir, tmp_path):
    folder = _copy_with(model_dir, tmp_path, "training_config.json", dataset_name=None,
                        train_file="data/bbc-news/train.csv", test_file="data/bbc-news/test.csv")
    card = render_card(folder)
    assert {r.dataset_name for r in card.data.eval_results} == {"bbc-news"}
    assert "csv" not in {r.dataset_type for r in card.data.eval_results}
    assert card.data.datasets is None  # no Hub dataset claimed


def test_a_damaged_record_is_one_sentence(model_dir, tmp_path):
    from nlp_transfer import UserInputError

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "metrics.json").write_text('{"validation": ')
    with pytest.raises(UserInputError, match=r"metrics.json .* is damaged"):
        render_card(folder)
