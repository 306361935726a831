"""Pushing to a Hub: the real huggingface_hub/transformers clients against a loopback Hub server.

Each test starts ``tests/hub_server.HubServer`` on 127.0.0.1 and points ``huggingface_hub`` at it
(``HF_ENDPOINT``), with a private cache and no cached login, so push → ``pipeline(model=REPO_ID)``
runs the same code paths as against huggingface.co.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants
from transformers import pipeline

from nlp_transfer import PushError, TrainConfig, push_to_hub, train
from nlp_transfer.cli import main
from nlp_transfer.hub import HUB_FILES, check_repo_id
from nlp_transfer.plots import plots_available

from conftest import synthetic_rows, write_csv
from hub_server import HubServer

TOKEN = "hf_TopSecretTestToken0123456789abcdef"
TEXTS = ["a great and wonderful film", "awful plot, terrible actors", "the movie was", "love it, sad ending"]
MODEL_FILES = {
    "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "metrics.json", "training_config.json", "training_summary.json",
} | ({"training_curves.png", "confusion_matrix.png"} if plots_available() else set())  # the card shows them


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running loopback Hub; huggingface_hub and transformers talk to it, with no token cached."""
    import transformers.utils.hub

    server = HubServer(token=TOKEN).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    # huggingface_hub reads HF_ENDPOINT and its paths once, at import: point the constants there too.
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # transformers keeps one HfApi, bound to the endpoint of the moment it was created.
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """One tiny model trained for this module (read-only: tests copy it before changing it)."""
    root = tmp_path_factory.mktemp("hub-model")
    config = TrainConfig(
        train_file=str(write_csv(root / "train.csv", synthetic_rows(160, seed=1))),
        test_file=str(write_csv(root / "test.csv", synthetic_rows(40, seed=3))),
        model=tiny_model_dir, output_dir=str(root / "model"), epochs=2, batch_size=16, learning_rate=2e-3,
        max_length=32, seed=7,
    )
    return Path(train(config).output_dir)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_pushed_model_loads_with_pipeline_and_predicts_like_the_local_folder(hub, model_dir):
    result = push_to_hub(model_dir, "tester/tiny-sentiment", token=TOKEN)

    assert result.url == f"{hub.url}/tester/tiny-sentiment" and result.revision == "main"
    assert result.commit_oid == hub.repos["tester/tiny-sentiment"].branches["main"]
    remote = pipeline("text-classification", model="tester/tiny-sentiment")
    local = pipeline("text-classification", model=str(model_dir))
    got, want = remote(TEXTS, truncation=True), local(TEXTS, truncation=True)
    assert [p["label"] for p in got] == [p["label"] for p in want]
    assert [p["score"] for p in got] == pytest.approx([p["score"] for p in want], abs=1e-6)
    # The download really came from the server, through the Hub cache layout.
    assert any(Path(constants.HF_HUB_CACHE).glob("models--tester--tiny-sentiment/snapshots/*/model.safetensors"))


def test_only_model_files_are_uploaded_and_the_token_is_nowhere(hub, model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    for junk in ("checkpoint-10/model.safetensors", "checkpoint-10/optimizer.pt", "optimizer.pt", "scheduler.pt",
                 ".cache/huggingface/upload/x.lock", "runs/events.out.tfevents", "training_args.bin", "notes.txt"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_bytes(b"not for the hub")
    before = snapshot(folder)

    result = push_to_hub(folder, "tester/clean", token=TOKEN)

    files = hub.repos["tester/clean"].resolve("main").files
    assert set(files) == MODEL_FILES | {".gitattributes"}
    assert set(result.files) == MODEL_FILES
    for path, content in files.items():
        assert TOKEN.encode() not in content, path
    assert snapshot(folder) == before  # the local folder, its README included, is untouched
    card = files["README.md"].decode()
    assert 'pipeline("text-classification", model="tester/clean")' in card
    assert 'load_classifier("tester/clean")' in card
    # Published records carry no paths of this machine (the local encoder folder, data files, the output folder).
    for name in ("training_config.json", "training_summary.json", "README.md"):
        assert str(tmp_path) not in files[name].decode() and "/tmp/" not in files[name].decode(), name
    pushed = json.loads(files["training_config.json"])
    assert pushed["model"] == Path(json.loads((folder / "training_config.json").read_text())["model"]).name


def test_repush_is_one_commit_that_mirrors_the_folder(hub, model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")  # a tokenizer file the next version drops
    push_to_hub(folder, "test-org/sentiment", token=TOKEN)
    repo = hub.repos["test-org/sentiment"]
    assert len(repo.history()) == 2  # the repo's initial commit + ours

    push_to_hub(folder, "test-org/sentiment", token=TOKEN)
    assert len(repo.history()) == 2, "an unchanged folder makes no commit"

    (folder / "vocab.txt").unlink()
    summary = json.loads((folder / "training_summary.json").read_text())
    summary["train_runtime_s"] += 1.0
    (folder / "training_summary.json").write_text(json.dumps(summary))
    result = push_to_hub(folder, "test-org/sentiment", token=TOKEN, commit_message="Retrained")

    history = repo.history()
    assert len(history) == 3 and history[0].message.startswith("Retrained") and history[0].oid == result.commit_oid
    assert "vocab.txt" not in history[0].files and "vocab.txt" in history[1].files
    assert json.loads(history[0].files["training_summary.json"]) == summary


def test_push_to_a_branch_and_private_repo(hub, model_dir):
    result = push_to_hub(model_dir, "tester/private-model", private=True, revision="experiment", token=TOKEN)

    repo = hub.repos["tester/private-model"]
    assert repo.private and result.revision == "experiment"
    assert "config.json" in repo.resolve("experiment").files and "config.json" not in repo.resolve("main").files


def test_network_errors_are_retried(hub, model_dir):
    hub.drop_next("create_repo", times=1)  # connection closed before any answer
    hub.drop_next("commit", times=1)  # and again in the middle of the upload
    push_to_hub(model_dir, "tester/flaky", token=TOKEN, backoff_s=0.01)
    assert len(hub.repos["tester/flaky"].history()) == 2


def test_network_error_that_persists_gives_a_clear_error_and_leaves_the_folder(hub, model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    before = snapshot(folder)
    hub.drop_next("create_repo", times=10)
    with pytest.raises(PushError, match=r"network error while pushing to http://127\.0\.0\.1:\d+/tester/down, "
                       r"still failing after 3 attempts .*is unchanged; push it again with: nlp-transfer push .* tester/down"):
        push_to_hub(folder, "tester/down", token=TOKEN, backoff_s=0.01)
    assert snapshot(folder) == before and "tester/down" not in hub.repos


@pytest.mark.parametrize("repo_id", ["sentiment", "a/b/c", "my org/model", "org/-model", "org/mo--del", "org/" + "x" * 97])
def test_malformed_repo_id_names_the_expected_form(repo_id):
    with pytest.raises(PushError, match=r"is not of the form namespace/name \(e\.g\. my-org/sentiment-minilm\)"):
        check_repo_id(repo_id)


def test_no_token_says_how_to_log_in(hub, model_dir):
    with pytest.raises(PushError, match=r"no Hugging Face token found.*hf auth login.*HF_TOKEN.*--token"):
        push_to_hub(model_dir, "tester/x")
    assert not hub.repos


def test_token_from_hf_token_env_is_used(hub, model_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push_to_hub(model_dir, "tester/from-env")
    assert "tester/from-env" in hub.repos


def test_token_from_the_cached_login_is_used(hub, model_dir):
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(constants.HF_TOKEN_PATH).write_text(TOKEN)  # what `hf auth login` leaves behind
    push_to_hub(model_dir, "tester/from-login")
    assert "tester/from-login" in hub.repos


def test_a_file_holding_the_token_is_never_uploaded(hub, model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    summary = json.loads((folder / "training_summary.json").read_text())
    summary["command"] += f" --hub-token {TOKEN}"  # e.g. a token typed into a wrapper script's command line
    (folder / "training_summary.json").write_text(json.dumps(summary))

    with pytest.raises(PushError, match=r"your Hub token is written in README.md, training_summary.json, so nothing was pushed") as err:
        push_to_hub(folder, "tester/leaky", token=TOKEN)
    assert TOKEN not in str(err.value) and not hub.repos


def test_include_adds_files_on_request(hub, model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "trainer_state.json").write_text("{}")

    result = push_to_hub(folder, "tester/with-checkpoint", token=TOKEN, include=["checkpoint-*"])

    assert "checkpoint-10/trainer_state.json" in result.files
    assert "checkpoint-10/trainer_state.json" in hub.repos["tester/with-checkpoint"].resolve("main").files


def test_forbidden_namespace_is_a_clear_403(hub, model_dir):
    with pytest.raises(PushError, match=r"no write access to someone-else/model on http://127.*403 Forbidden.*'someone-else'"):
        push_to_hub(model_dir, "someone-else/model", token=TOKEN)


def test_cli_push_prints_the_commit_and_never_the_token(hub, model_dir, capsys, caplog):
    code = main(["push", str(model_dir), "tester/cli-model", "--token", TOKEN, "--commit-message", "First version"])

    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["repo_id"] == "tester/cli-model" and report["commit_url"].startswith(hub.url)
    assert hub.repos["tester/cli-model"].history()[0].message.startswith("First version")
    assert TOKEN not in out + err + caplog.text


def test_console_script_honours_hf_endpoint_and_hf_token(hub, model_dir, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "nlp_transfer.cli", "push", str(model_dir), "test-org/from-shell"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["url"] == f"{hub.url}/test-org/from-shell"
    assert TOKEN not in proc.stdout + proc.stderr


def test_cli_wrong_token_is_a_401_error_with_exit_2(hub, model_dir, capsys, caplog):
    wrong = "hf_WrongToken000000000000000000000"
    code = main(["push", str(model_dir), "tester/cli-model", "--token", wrong])

    _, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "rejected the token (401 Unauthorized)" in lines[0] and "hf auth login" in lines[0]
    assert wrong not in err + caplog.text


def test_cli_unreachable_server_names_the_endpoint_with_exit_2(hub, model_dir, capsys, monkeypatch):
    url = closed_port_url()
    monkeypatch.setattr(constants, "ENDPOINT", url)

    code = main(["push", str(model_dir), "tester/cli-model", "--token", TOKEN])

    _, err = capsys.readouterr()
    assert code == 2
    assert f"error: could not reach the Hub at {url} after 3 attempts" in err and "HF_ENDPOINT" in err
    assert TOKEN not in err


def test_train_with_push_to_hub_pushes_at_the_end(hub, tiny_config, capsys):
    config = tiny_config(epochs=1)
    args = ["train", config.train_file, "--test-file", config.test_file, "--model", config.model,
            "--output-dir", config.output_dir, "--epochs", "1", "--max-length", "32",
            "--push-to-hub", "tester/trained", "--token", TOKEN]

    code = main(args)

    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["hub"]["url"] == f"{hub.url}/tester/trained"
    files = hub.repos["tester/trained"].resolve("main").files
    assert set(files) == MODEL_FILES | {".gitattributes"}
    summary = json.loads(files["training_summary.json"])
    assert "--push-to-hub tester/trained" in summary["command"] and "--token" not in summary["command"]
    for path, content in files.items():
        assert TOKEN.encode() not in content, path
    assert ModelCard(files["README.md"].decode()).data.model_name == "trained"


def test_train_without_a_token_stops_before_training(hub, tiny_config):
    config = tiny_config(push_to_hub="tester/never")
    with pytest.raises(PushError, match="no Hugging Face token found"):
        train(config)
    assert not Path(config.output_dir).exists()


def test_push_to_hub_setting_checks_the_repo_id():
    with pytest.raises(PushError, match="namespace/name"):
        TrainConfig(train_file="x.csv", push_to_hub="no-namespace")


def test_hub_files_cover_what_a_model_folder_needs():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json"):
        assert name in HUB_FILES


# ---- network faults, tokens, unchanged folders -------------------------------------------------

def test_a_hub_that_never_answers_times_out_retries_and_says_so(hub, model_dir, monkeypatch):
    import time

    from hub_server import SilentServer

    silent = SilentServer().start()
    try:
        started = time.monotonic()
        with pytest.raises(PushError, match=r"the Hub at http://127\.0\.0\.1:\d+ accepted the connection but did not "
                           r"answer within 0\.5 s, 2 attempts; .*push it again with: nlp-transfer push"):
            push_to_hub(model_dir, "tester/hung", token=TOKEN, endpoint=silent.url, retries=2, backoff_s=0.01, timeout_s=0.5)
        assert time.monotonic() - started < 10
        assert silent.connections >= 2, "retried"
    finally:
        silent.stop()
    from huggingface_hub import get_session

    assert get_session().timeout.read is None, "the shared client's timeout is put back"


@pytest.mark.parametrize("token, shown", [("hf_tökén123", "'ö'"), ("hf_abc def", "a space"), ("hf_\x07bell", r"'\x07'")])
def test_a_token_no_hub_token_can_be_is_one_line(hub, model_dir, capsys, token, shown):
    code = main(["push", str(model_dir), "tester/x", "--token", token])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert f"--token contains {shown}, which a Hugging Face token never holds" in err
    assert token not in err and not hub.repos


def test_spaces_around_a_pasted_token_are_dropped(hub, model_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", f"  {TOKEN}\n")
    push_to_hub(model_dir, "tester/pasted")
    assert "tester/pasted" in hub.repos


def test_pushing_an_unchanged_folder_says_nothing_changed(hub, model_dir, capsys):
    first = push_to_hub(model_dir, "tester/same", token=TOKEN)
    assert first.changed
    assert main(["push", str(model_dir), "tester/same", "--token", TOKEN]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changed"] is False and report["commit_oid"] == first.commit_oid
    assert len(hub.repos["tester/same"].history()) == 2


def test_a_temporary_folder_that_cannot_be_written_is_one_line(hub, model_dir, tmp_path, monkeypatch):
    import tempfile

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))
    with pytest.raises(PushError, match=r"cannot stage the files to push in .*a part of the path is a file"):
        push_to_hub(model_dir, "tester/no-tmp", token=TOKEN)
    assert not hub.repos


def test_a_full_temporary_disk_is_one_line_and_leaves_nothing(hub, model_dir, tmp_path, monkeypatch):
    import tempfile

    from fs_faults import tmpfs

    with tmpfs(tmp_path / "full", full=True) as full:
        monkeypatch.setattr(tempfile, "tempdir", str(full))
        with pytest.raises(PushError, match=r"cannot stage the files to push in .*: the disk is full"):
            push_to_hub(model_dir, "tester/full-tmp", token=TOKEN)
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
    assert not hub.repos


# ---- loading a Hub id: fast answers without a network ------------------------------------------

def test_a_hub_id_loads_from_the_hub_then_from_the_cache_when_the_hub_is_gone(hub, model_dir, monkeypatch, caplog):
    from nlp_transfer import hub_client, load_classifier

    push_to_hub(model_dir, "tester/cached", token=TOKEN)
    online = load_classifier("tester/cached").predict(TEXTS)
    hub.stop()
    monkeypatch.setattr(hub_client, "_probes", {})  # forget that the server answered a moment ago
    offline = load_classifier("tester/cached").predict(TEXTS)
    assert [p["label"] for p in offline] == [p["label"] for p in online]
    assert "cannot be reached" in caplog.text and "using the cached copy of tester/cached" in caplog.text


def test_a_hub_id_without_network_is_one_quick_line(hub, tiny_config, monkeypatch, capsys):
    import time

    from nlp_transfer import hub_client

    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    monkeypatch.setattr(hub_client, "_probes", {})
    config = tiny_config()
    started = time.monotonic()
    code = main(["-q", "train", config.train_file, "--model", "someone/some-model", "--output-dir", config.output_dir])
    err = capsys.readouterr().err
    assert time.monotonic() - started < 15
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "error: model 'someone/some-model' is not a local folder and the Hub at http://127.0.0.1" in err
    assert "cannot be reached" in err and "no network? Pass a local model folder, or connect" in err


def test_hf_hub_offline_is_honoured_for_hub_ids(hub, model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = write_csv(tmp_path / "in.csv", [("a good film",)], header=("text",))
    code = main(["-q", "predict", "tester/not-cached", str(source), "--output", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "HF_HUB_OFFLINE is set and the local Hugging Face cache does not hold it" in err, err
    assert err.count("error:") == 1 and not (tmp_path / "out.csv").exists()
