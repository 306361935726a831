"""Writing files whole or not at all, strict JSON, output-path guards and one-line filesystem errors."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

from nlp_transfer import UserInputError
from nlp_transfer.artifacts import (OutputDir, check_output_file, filesystem_error, read_json, share_like_umask,
                                    to_json, write_json, write_text)
from nlp_transfer.cli import main


def test_json_is_strict_standard_json():
    text = to_json({"loss": float("nan"), "best": float("-inf"), "ok": [1.5, float("inf")], "label": "é"})
    assert json.loads(text) == {"loss": None, "best": None, "ok": [1.5, None], "label": "é"}
    assert "NaN" not in text and "Infinity" not in text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})

    def broken_replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(UserInputError, match=r"cannot write .*metrics.json': the disk is full; free some space"):
        write_text(target, "new")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        path = write_text(tmp_path / "card.md", "x")
        folder = tmp_path / "folder"
        folder.mkdir(mode=0o700)
        (folder / "weights").write_bytes(b"1")
        os.chmod(folder / "weights", 0o600)
        share_like_umask(folder)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((folder / "weights").stat().st_mode) == 0o640
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750


def test_filesystem_errors_are_one_sentence_with_the_fix(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = filesystem_error(OSError(errno.EEXIST, "File exists"), afile / "model", "write --output-dir")
    assert str(err) == (f"cannot write --output-dir {str(afile / 'model')!r}: a part of the path is a file, not a folder "
                        f"({str(afile)!r}); fix the path.")
    assert "read-only" in str(filesystem_error(OSError(errno.EROFS, "Read-only"), tmp_path / "x"))
    assert "permission denied" in str(filesystem_error(PermissionError(errno.EACCES, "denied"), tmp_path / "x"))


def test_an_output_dir_under_a_file_is_one_line_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    output = OutputDir(tmp_path / "afile" / "deeper" / "model")
    with pytest.raises(UserInputError, match=r"is a file, not a folder"):
        output.lock()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert main(["train", str(tmp_path / "t.csv"), "--output-dir", str(tmp_path / "afile" / "model")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_output_file_may_not_be_an_input_or_a_folder(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text,label\n")
    with pytest.raises(UserInputError, match="is the input file"):
        check_output_file(data, [data])
    with pytest.raises(UserInputError, match="is a directory"):
        check_output_file(tmp_path, [data])
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        check_output_file(data / "out.json", [])
    assert check_output_file(tmp_path / "new" / "out.json", [data]) == tmp_path / "new" / "out.json"


def test_a_damaged_json_record_is_one_sentence(tmp_path):
    path = tmp_path / "training_summary.json"
    path.write_text('{"history": [')
    with pytest.raises(UserInputError, match=r"the summary .*training_summary.json' is damaged"):
        read_json(path, "the summary")
