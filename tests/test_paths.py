"""Paths refused before anything is announced (issue 29, item 4): ``--data-dir`` or ``--out`` naming a
file, a folder that cannot be read, a folder on a full disk: one true line each, nothing downloaded,
nothing created. A full disk is simulated (minisd.tools.runs.free_bytes), never made."""
import os
import tarfile

import pytest

from minisd import train
from minisd.data import files as data_files
from minisd.data.fake import write_fake_cifar10
from minisd.tools import runs


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=20, seed=0, n_test=20)
    return root


def argv(data, out, *extra):
    return ["--data-dir", str(data), "--depth", "8", "--epochs", "1", "--batch-size", "16", "--limit-train", "32",
            "--valid-size", "0", "--eval-batch-size", "40", "--device", "cpu", "--out", str(out), "--no-progress",
            *extra]


def refused(args, capsys):
    """Run the CLI, which must refuse: its one stderr line; nothing on stdout (nothing was announced)."""
    capsys.readouterr()
    assert train.main(args) == 1
    out, err = capsys.readouterr()
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == "", out  # no "downloading ...", no "resumed ...": the refusal is the only line
    return lines[0]


def full_below(folder, monkeypatch, free=1000):
    """The device holding ``folder`` has ``free`` bytes left; every other device has plenty."""
    real = runs.free_bytes
    monkeypatch.setattr(runs, "free_bytes", lambda p: free if str(os.path.abspath(p)).startswith(str(folder))
                        else real(p))


def test_data_dir_naming_a_file(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("not data")
    line = refused(argv(afile, tmp_path / "run"), capsys)
    assert f"{afile} is a file, not a folder" in line
    assert afile.read_text() == "not data" and not (tmp_path / "run").exists()


def test_a_tarball_is_a_data_dir_and_a_text_file_is_not(fake_root, tmp_path):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(fake_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data_files.check_root(tarball)  # the loaders read a tarball as it is
    assert data_files.missing_files("cifar10", tarball) == []
    assert [r.filename for r in data_files.missing_files("cifar10", tmp_path / "absent")] == ["cifar-10-python.tar.gz"]
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(data_files.DataError, match="is a file"):
        data_files.missing_files("cifar10", tmp_path / "x.txt")


def test_data_dir_that_cannot_be_read(fake_root, tmp_path, capsys, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(fake_root) else real(p, mode))
    line = refused(argv(fake_root, tmp_path / "run"), capsys)
    assert f"cannot read the data folder {fake_root}: permission denied" in line
    assert not (tmp_path / "run").exists()


def test_data_dir_on_a_full_disk_when_the_data_must_be_downloaded(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    full_below(empty, monkeypatch)
    line = refused(argv(empty, tmp_path / "run"), capsys)
    assert f"cannot write the download into {empty}: the device is full (0.0 MB free, 163 MB needed)" in line
    assert os.listdir(empty) == [] and not (tmp_path / "run").exists()


def test_data_dir_that_cannot_be_created(tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(parent) else real(p, mode))
    line = refused(argv(parent / "data", tmp_path / "run"), capsys)
    assert "the data set is not there and cannot be downloaded into it" in line and str(parent) in line


def test_a_full_disk_does_not_matter_when_the_data_is_there(fake_root, tmp_path, capsys, monkeypatch):
    full_below(fake_root, monkeypatch, free=0)
    assert train.main(argv(fake_root, tmp_path / "run")) == 0  # nothing to download: nothing refused
    assert "done: test error" in capsys.readouterr().out


def test_out_on_a_full_disk(fake_root, tmp_path, capsys, monkeypatch):
    full_below(tmp_path / "disk", monkeypatch)
    (tmp_path / "disk").mkdir()
    for out in (tmp_path / "disk" / "new" / "run", tmp_path / "disk"):  # to be created; there already
        line = refused(argv(fake_root, out), capsys)
        assert "the device is full (0.0 MB free)" in line and "choose another --out" in line
    assert os.listdir(tmp_path / "disk") == []


def test_out_naming_a_file_and_out_that_cannot_be_read(fake_root, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("mine")
    assert f"--out {afile} is a file, not a folder" in refused(argv(fake_root, afile), capsys)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(hidden) and mode & os.R_OK
                        else real(p, mode))
    assert f"cannot read the run folder {hidden}: permission denied" in refused(argv(fake_root, hidden), capsys)
    assert afile.read_text() == "mine" and os.listdir(hidden) == []
