"""The real CIFAR-10 sample shipped inside minisd (minisd/data/sample.py, cifar-10-sample.tar.gz).

What the quick start, the lessons and these tests train on without a download: its counts,
checksums and labels are what its provenance note (minisd/data/cifar-10-sample.md) says, and
it is what ``load_dataset("cifar10-sample")`` and ``--dataset cifar10-sample`` use.
"""
import hashlib
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from minisd import data
from minisd.data import fake as fake_data, files as data_files, sample

NOTE = sample.TARBALL.with_name("cifar-10-sample.md")


def _note_md5s():
    """{member or tarball name: md5} as the provenance note writes them."""
    text = NOTE.read_text()
    found = dict(re.findall(r"`cifar-10-batches-py/([\w.]+)` \| [^|]+ \| `([0-9a-f]{32})`", text))
    found["tarball"] = re.search(r"MD5 `([0-9a-f]{32})`", text).group(1)
    return found


def test_the_sample_is_what_its_note_says():
    md5s = _note_md5s()
    assert data_files.file_md5(sample.TARBALL) == md5s["tarball"]
    assert f"{sample.TARBALL.stat().st_size:,} bytes" in NOTE.read_text()
    with tarfile.open(sample.TARBALL) as tar:
        members = {Path(m.name).name: tar.extractfile(m).read() for m in tar}
    assert set(members) == set(md5s) - {"tarball"}
    for name, payload in members.items():
        assert hashlib.md5(payload).hexdigest() == md5s[name], name
    assert sample.TARBALL.stat().st_size < 10.5e6  # small enough to ship


def test_load_dataset_returns_the_sample_with_no_folder_and_no_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data, no $MINISD_DATA: nothing outside the package
    monkeypatch.delenv("MINISD_DATA", raising=False)
    x, y, xt, yt, k = data.load_dataset("cifar10-sample")
    assert k == 10 and data.NUM_CLASSES["cifar10-sample"] == 10
    assert x.shape == (2500, 3, 32, 32) and xt.shape == (1000, 3, 32, 32)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and y.shape == (2500,) and yt.shape == (1000,)
    assert set(np.unique(y)) == set(range(10)) and np.bincount(y).min() > 200  # every class, roughly even
    # the official test_batch starts: cat, ship, ship, airplane, frog, frog, automobile, frog, cat, automobile
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert 100 < x.mean() < 140 and x.std() > 40  # natural images, not noise or zeros
    assert data_files.cifar_class_names(sample.TARBALL) == list(data_files.CIFAR10_CLASSES)
    assert not (tmp_path / "data").exists()
    *_, files = data.load_dataset("cifar10-sample", with_files=True)
    assert files is None


def test_its_default_validation_split_is_a_fraction():
    assert data.default_valid_size("cifar10-sample", 2500) == 0.1
    assert data.default_valid_size("cifar10", 5170) == 0.1     # a small copy: most images trained on
    assert data.default_valid_size("cifar10", 50000) == 5000   # the paper's split of the full set
    assert data.default_valid_size("svhn", 73257) == 5000


def test_make_sample_takes_the_first_images_of_each_file(tmp_path):
    src = fake_data.write_fake_cifar10(tmp_path / "src", n_per_batch=7, seed=3, n_test=9)
    out = sample.make_sample(src.parent, tmp_path / "s.tar.gz", per_batch=4, n_test=5)
    x, y, xt, yt = data.load_cifar10(out)
    fx, fy, fxt, fyt = data.load_cifar10(src.parent)
    first = np.concatenate([np.arange(4) + 7 * b for b in range(5)])
    assert np.array_equal(x, fx[first]) and np.array_equal(y, fy[first])
    assert np.array_equal(xt, fxt[:5]) and np.array_equal(yt, fyt[:5])
    again = sample.make_sample(src.parent, tmp_path / "t.tar.gz", per_batch=4, n_test=5)
    assert again.read_bytes() == out.read_bytes()  # the same input gives the same bytes
    with pytest.raises(ValueError, match="fewer than 8"):
        sample.make_sample(src.parent, tmp_path / "u.tar.gz", per_batch=8, n_test=5)


def test_the_sample_is_the_first_images_of_the_larger_copy_where_present():
    root = Path(os.environ.get("MINISD_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (root / "cifar-10-batches-py").is_dir():
        pytest.skip("the larger real copy is not on this machine (never required)")
    x, y, xt, yt = data.load_cifar10(root)
    sx, sy, sxt, syt = sample.load_cifar10_sample()
    sizes = [len(data_files.safe_loads((root / "cifar-10-batches-py" / f"data_batch_{i}").read_bytes())[b"labels"])
             for i in range(1, 6)]
    first = np.concatenate([np.arange(500) + sum(sizes[:b]) for b in range(5)])
    assert np.array_equal(sx, x[first]) and np.array_equal(sy, y[first])
    assert np.array_equal(sxt, xt[:1000]) and np.array_equal(syt, yt[:1000])


def test_the_cli_trains_on_the_sample_offline_with_no_folder(tmp_path, monkeypatch, capsys):
    """The README's quick start, made small: no network, no ./data, no $MINISD_DATA."""
    import urllib.request

    from minisd import train

    def offline(url, *a, **k):
        raise AssertionError("the sample needs no download")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINISD_DATA", raising=False)
    assert train.main(["--dataset", "cifar10-sample", "--depth", "8", "--epochs", "1", "--limit-train", "320",
                       "--batch-size", "32", "--device", "cpu", "--no-progress", "--out", "runs/quickstart"]) == 0
    out = capsys.readouterr().out
    # the default validation split of a set this small is a fraction: 32 of the 320 images
    assert "a fraction 0.1 of the 320 training images" in out and "288 train / 32 valid / 1000 test" in out
    assert (tmp_path / "runs" / "quickstart" / "summary.json").is_file()
    assert not (tmp_path / "data").exists()  # nothing downloaded, no folder made
