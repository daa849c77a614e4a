"""Tests for minisd.data (loading, split, normalisation), minisd.data.files (file formats, safe
unpickling, download) and minisd.data.fake (the stand-in files).

Real data: the sample shipped with minisd is tested in test_sample.py; the larger official-format
CIFAR subsets in ``$MINISD_DATA`` or ``<repo>/../shared/data`` are used where present (those tests
skip when absent: nothing outside the clone is required).
Everything else runs on generated files in the exact official format.
No test touches the network: ``urllib.request.urlopen`` is replaced for the
whole module by one that accepts only ``file:`` URLs.
"""
import io
import os
import pickle
import pickletools
import shlex
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import minisd
from minisd import backend, data
from minisd.data import fake as fake_data, files as data_files
from minisd.data import DataError, DataNotFoundError
from minisd.data.files import Resource

def _real_root(folder):
    """The larger real subsets, where this machine has them (never required)."""
    root = Path(os.environ.get("MINISD_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (root / folder).is_dir():
        pytest.skip(f"real data ({folder}) not found: set MINISD_DATA or provide <repo>/../shared/data")
    return root


@pytest.fixture
def fake10(tmp_path):
    """A generated CIFAR-10: 5 x 20 training images, 30 test images, under tmp_path/cifar-10-batches-py."""
    fake_data.write_fake_cifar10(tmp_path, n_per_batch=20, seed=0, n_test=30)
    return tmp_path


@pytest.fixture
def fake100(tmp_path):
    fake_data.write_fake_cifar100(tmp_path, n_per_batch=150, seed=1, n_test=120)
    return tmp_path


def _make_tarball(src_folder: Path, tar_path: Path):
    """A .tar.gz laid out like the official one: members <folder name>/<file>."""
    with tarfile.open(tar_path, "w:gz") as tar:
        for f in sorted(src_folder.iterdir()):
            tar.add(f, arcname=f"{src_folder.name}/{f.name}")
    return tar_path


def _assert_images(x, y, n, num_classes, all_classes=True):
    assert x.shape == (n, 3, 32, 32) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() < num_classes
    if all_classes:
        assert len(np.unique(y)) == num_classes


# ---------------------------------------------------------------------------
# real subsets
# ---------------------------------------------------------------------------


def test_real_cifar10_shapes_labels_and_names():
    root = _real_root("cifar-10-batches-py")
    x, y, xt, yt = data.load_cifar10(root)
    _assert_images(x, y, 5170, 10)
    _assert_images(xt, yt, 1017, 10)
    # the official test_batch starts: cat, ship, ship, airplane, frog, frog, automobile, frog, cat, automobile
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert data_files.cifar_class_names(root) == list(data_files.CIFAR10_CLASSES)
    assert 100 < x.mean() < 140 and x.std() > 40  # natural images, not noise or zeros
    # the folder itself works as root too
    x2, *_ = data.load_cifar10(root / "cifar-10-batches-py")
    assert np.array_equal(x, x2)


def test_real_cifar100_fine_and_coarse():
    root = _real_root("cifar-100-python")
    x, y, xt, yt = data.load_cifar100(root)
    _assert_images(x, y, 486, 100, all_classes=False)
    _assert_images(xt, yt, 916, 100, all_classes=False)
    assert len(np.unique(np.concatenate([y, yt]))) > 90
    _, yc, _, ytc = data.load_cifar100(root, label_mode="coarse")
    assert yc.max() < 20 and ytc.max() < 20 and len(np.unique(yc)) == 20
    fine, coarse = data_files.cifar_class_names(root, "cifar100"), data_files.cifar_class_names(root, "cifar100", "coarse")
    assert len(fine) == 100 and len(coarse) == 20 and fine[0] == "apple"


def test_real_files_match_md5sums():
    root = _real_root("cifar-10-batches-py")
    sums = (root / "MD5SUMS").read_text().split("\n")
    for line in filter(None, sums):
        md5, name = line.split()
        assert data_files.file_md5(root / name) == md5, name


def test_real_and_generated_files_import_the_same_globals(tmp_path):
    root = _real_root("cifar-10-batches-py")
    fake = fake_data.write_fake_cifar10(tmp_path, n_per_batch=3)

    def globals_of(path):
        return [arg for op, arg, _ in pickletools.genops(path.read_bytes()) if "GLOBAL" in op.name]
    assert globals_of(fake / "data_batch_1") == globals_of(root / "cifar-10-batches-py" / "data_batch_1")


# ---------------------------------------------------------------------------
# generated data, every form of root
# ---------------------------------------------------------------------------


def test_fake_cifar10_shapes_and_names(fake10):
    x, y, xt, yt = data.load_cifar10(fake10)
    _assert_images(x, y, 100, 10)
    _assert_images(xt, yt, 30, 10)
    assert data_files.cifar_class_names(fake10) == list(data_files.CIFAR10_CLASSES)


def test_fake_cifar100_fine_and_coarse(fake100):
    x, y, xt, yt = data.load_cifar100(fake100)
    _assert_images(x, y, 150, 100)
    _assert_images(xt, yt, 120, 100, all_classes=False)
    _, yc, _, _ = data.load_cifar100(fake100, label_mode="coarse")
    assert np.array_equal(yc, y // 5)  # the generator's coarse rule
    assert len(data_files.cifar_class_names(fake100, "cifar100", "coarse")) == 20
    with pytest.raises(ValueError, match="label_mode"):
        data.load_cifar100(fake100, label_mode="medium")


def test_generated_images_are_class_dependent(fake10):
    x, y, xt, yt = data.load_cifar10(fake10)
    means = np.stack([x[y == k].reshape(-1, 3072).mean(0) for k in range(10)])
    nearest = np.argmin(((xt.reshape(-1, 3072)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == yt).mean() > 0.9  # learnable: a nearest-class-mean rule already works


@pytest.mark.parametrize("form", ["parent", "folder", "tarball", "folder_with_tarball"])
def test_every_root_form_gives_the_same_arrays(tmp_path, form):
    src = fake_data.write_fake_cifar10(tmp_path / "src", n_per_batch=8, n_test=9, seed=3)
    expected = data.load_cifar10(tmp_path / "src")
    if form == "parent":
        root = tmp_path / "src"
    elif form == "folder":
        root = src
    else:
        (tmp_path / "dl").mkdir()
        tar = _make_tarball(src, tmp_path / "dl" / "cifar-10-python.tar.gz")
        root = tar if form == "tarball" else tmp_path / "dl"
    got = data.load_cifar10(root)
    for a, b in zip(expected, got):
        assert np.array_equal(a, b)
    assert data_files.cifar_class_names(root)[0] == "airplane"


def test_cifar100_tarball(tmp_path):
    src = fake_data.write_fake_cifar100(tmp_path / "src", n_per_batch=110, n_test=100)
    tar = _make_tarball(src, tmp_path / "cifar-100-python.tar.gz")
    for a, b in zip(data.load_cifar100(tmp_path / "src"), data.load_cifar100(tar)):
        assert np.array_equal(a, b)
    assert len(data_files.cifar_class_names(tar, "cifar100")) == 100


def test_pixel_layout_round_trip(tmp_path):
    """A known image written as the official row (1024 R, 1024 G, 1024 B, rows of 32) comes back as CHW."""
    folder = fake_data.write_fake_cifar10(tmp_path, n_per_batch=2, n_test=2)
    r = np.arange(32)[:, None] * 8 + np.zeros(32, int)    # red grows down the rows
    g = np.arange(32)[None, :] * 8 + np.zeros((32, 1), int)  # green grows along the columns
    b = np.full((32, 32), 7)
    b[0, 31] = 250                                         # one marked pixel: top right
    row = np.concatenate([r.ravel(), g.ravel(), b.ravel()]).astype(np.uint8)  # built by hand, not by data.py
    other = np.zeros(3072, np.uint8)
    fake_data.write_cifar_pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1",
                                                    b"labels": [4, 2], b"data": np.stack([other, row])})
    _, _, xt, yt = data.load_cifar10(tmp_path)
    img = xt[1]
    assert yt.tolist() == [4, 2]
    assert np.array_equal(img[0], r) and np.array_equal(img[1], g)
    assert img[2, 0, 31] == 250 and img[2, 31, 0] == 7 and img[2, 0, 0] == 7


# ---------------------------------------------------------------------------
# safe unpickling
# ---------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.system(cmd)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _evil_pickle(marker: Path):
    blob = pickle.dumps({"data": _Payload(f"touch {shlex.quote(str(marker))}"), "labels": []}, protocol=2)
    names = [arg for op, arg, _ in pickletools.genops(blob) if "GLOBAL" in op.name]
    assert any("system" in str(n) for n in names)  # the payload really names os.system
    return blob


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="refused to load global '(os|posix).system'"):
        data_files.safe_loads(_evil_pickle(marker))
    assert not marker.exists()


def test_malicious_batch_file_gives_data_error(fake10):
    marker = fake10 / "pwned"
    (fake10 / "cifar-10-batches-py" / "data_batch_2").write_bytes(_evil_pickle(marker))
    with pytest.raises(DataError, match="data_batch_2.*refused"):
        data.load_cifar10(fake10)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [eval, print, io.BytesIO, np.load])
def test_other_globals_are_refused(obj):
    class R:
        def __reduce__(self):
            return (obj, ("1",))
    with pytest.raises(data_files.UnsafePickleError):
        data_files.safe_loads(pickle.dumps(R(), protocol=2))


def test_python3_pickles_of_arrays():
    """Python 3 pickles (numpy._core spelling, str keys) load at protocols 3 and 4; at protocol 2
    Python 3 writes bytes as a call to _codecs.encode, which is refused like any other call."""
    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    for proto in (3, 4):  # protocol 5 rebuilds arrays with numpy._core.numeric._frombuffer: refused
        back = data_files.safe_loads(pickle.dumps({"data": arr, "labels": [1, 2]}, protocol=proto))
        assert np.array_equal(back["data"], arr) and back["labels"] == [1, 2]
    with pytest.raises(data_files.UnsafePickleError, match="_codecs.encode"):
        data_files.safe_loads(pickle.dumps({"data": arr}, protocol=2))


@pytest.mark.parametrize("protocol, said", [(2, "protocol 2"), (5, "protocol 5")])
def test_python3_protocol_2_or_5_file_says_what_is_accepted_and_why(fake10, protocol, said):
    batch = fake10 / "cifar-10-batches-py" / "data_batch_1"
    obj = pickle.loads(batch.read_bytes(), encoding="bytes")
    batch.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(DataError) as e:
        data.load_cifar10(fake10)
    msg = str(e.value)
    assert "data_batch_1" in msg and said in msg and "protocol 3 or 4" in msg  # which file, what to do
    assert "official CIFAR files" in msg and "can run any code" in msg           # what is accepted, and why
    assert "malicious" not in msg and "\n" not in msg
    batch.write_bytes(pickle.dumps(obj, protocol=4))  # as the message says: now it loads
    assert data.load_cifar10(fake10)[0].shape == (100, 3, 32, 32)


def test_truncated_and_wrong_files(fake10):
    folder = fake10 / "cifar-10-batches-py"
    good = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_1").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot read CIFAR-10 file data_batch_1"):
        data.load_cifar10(fake10)
    fake_data.write_cifar_pickle(folder / "data_batch_1", {b"labels": [1], b"data": np.zeros((1, 100), np.uint8)})
    with pytest.raises(DataError, match="N x 3072"):
        data.load_cifar10(fake10)
    fake_data.write_cifar_pickle(folder / "data_batch_1", {b"labels": [12], b"data": np.zeros((1, 3072), np.uint8)})
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        data.load_cifar10(fake10)


def test_missing_and_corrupt_sources(tmp_path, fake10):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py.*cifar-10-python.tar.gz"):
        data.load_cifar10(tmp_path / "nowhere")
    (fake10 / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3 missing"):
        data.load_cifar10(fake10)
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip" * 10)
    with pytest.raises(DataError, match="cannot read .*cifar-10-python.tar.gz"):
        data.load_cifar10(bad)
    partial = tmp_path / "partial" / "cifar-10-python.tar.gz"
    partial.parent.mkdir()
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(fake10 / "cifar-10-batches-py" / "data_batch_1", arcname="cifar-10-batches-py/data_batch_1")
        tar.add(fake10 / "cifar-10-batches-py" / "test_batch", arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_2"):
        data.load_cifar10(partial)


# ---------------------------------------------------------------------------
# SVHN
# ---------------------------------------------------------------------------


def test_svhn_layout_and_label_mapping(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    x = np.zeros((3, 3, 32, 32), np.uint8)
    x[1, 0, 5, 9] = 200   # image 1, red, row 5, column 9
    x[2, 2, 31, 0] = 77   # image 2, blue, bottom left
    y = np.array([[10], [1], [9]], np.uint8)  # 10 is the digit 0
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy_io.savemat(str(tmp_path / name), {"X": x.transpose(2, 3, 1, 0), "y": y})
    xtr, ytr, xte, yte = data.load_svhn(tmp_path)
    assert xtr.shape == (3, 3, 32, 32) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert np.array_equal(xtr, x) and ytr.tolist() == [0, 1, 9]
    out = data.load_dataset("svhn", tmp_path)
    assert out[4] == 10 and np.array_equal(out[0], x)


def test_fake_svhn_writer(tmp_path):
    pytest.importorskip("scipy.io")
    fake_data.write_fake_svhn(tmp_path, n_train=40, n_test=20)
    x, y, xt, yt = data.load_svhn(tmp_path)
    _assert_images(x, y, 40, 10)
    _assert_images(xt, yt, 20, 10)


def test_svhn_missing_files_and_missing_scipy(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="train_32x32.mat, test_32x32.mat missing"):
        data.load_svhn(tmp_path)
    (tmp_path / "train_32x32.mat").write_bytes(b"x")
    (tmp_path / "test_32x32.mat").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes `from scipy.io import loadmat` fail
    with pytest.raises(DataError, match="pip install scipy"):
        data.load_svhn(tmp_path)


# ---------------------------------------------------------------------------
# download (local files only)
# ---------------------------------------------------------------------------


class _Response(io.BytesIO):
    """What urlopen returns, enough for download(): read(n) and a context manager."""


def _serve(payload: bytes, fail_after=None):
    """A fake urlopen serving ``payload``; raises ConnectionResetError after ``fail_after`` bytes."""
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        if fail_after is None:
            return _Response(payload)
        resp = _Response(payload[:fail_after])
        real_read = resp.read

        def read(n=-1):
            chunk = real_read(n)
            if not chunk:
                raise ConnectionResetError("connection reset by peer")
            return chunk
        resp.read = read
        return resp
    urlopen.calls = calls
    return urlopen


def _fake_resource(monkeypatch, payload, name="cifar-10-python.tar.gz", dataset="cifar10", url=None):
    import hashlib
    res = Resource(name, url or f"https://example.invalid/{name}", hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(data_files.RESOURCES, dataset, (res,))
    return res


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_official_resources():
    r = {d: [(x.filename, x.md5) for x in v] for d, v in data_files.RESOURCES.items()}
    assert r["cifar10"] == [("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]
    assert r["cifar100"] == [("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")]
    assert r["svhn"] == [("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                         ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")]
    assert data_files.RESOURCES["cifar10"][0].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def test_download_success_then_skip(tmp_path, monkeypatch):
    payload = os.urandom(3 * (1 << 20) + 123)  # several read chunks
    _fake_resource(monkeypatch, payload)
    opener = _serve(payload)
    paths = data_files.download("cifar10", tmp_path / "cache", urlopen=opener, log=None)
    assert paths == [tmp_path / "cache" / "cifar-10-python.tar.gz"]
    assert paths[0].read_bytes() == payload and len(opener.calls) == 1
    assert _leftovers(tmp_path / "cache") == ["cifar-10-python.tar.gz"]

    def offline(url, timeout=None):
        raise AssertionError("must not download a file that is already there")
    assert data_files.download("cifar10", tmp_path / "cache", urlopen=offline, log=None) == paths


def test_download_file_url_with_default_opener(tmp_path, monkeypatch):
    src = tmp_path / "mirror.bin"
    src.write_bytes(b"hello cifar" * 1000)
    _fake_resource(monkeypatch, src.read_bytes(), url=src.as_uri())
    lines = []
    (path,) = data_files.download("cifar10", tmp_path / "cache", log=lines.append)  # urllib.request.urlopen
    assert path.read_bytes() == src.read_bytes() and any("downloaded" in s for s in lines)


def test_download_bad_md5_leaves_nothing(tmp_path, monkeypatch):
    _fake_resource(monkeypatch, b"the real bytes")
    with pytest.raises(DataError, match="corrupt: MD5") as e:
        data_files.download("cifar10", tmp_path, urlopen=_serve(b"other bytes"), log=None)
    assert _leftovers(tmp_path) == []
    assert "\n" not in str(e.value)


def test_download_replaces_a_damaged_file(tmp_path, monkeypatch):
    _fake_resource(monkeypatch, b"complete file")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"compl")  # an earlier, interrupted copy
    (path,) = data_files.download("cifar10", tmp_path, urlopen=_serve(b"complete file"), log=None)
    assert path.read_bytes() == b"complete file" and _leftovers(tmp_path) == ["cifar-10-python.tar.gz"]


def test_download_network_failure_is_one_clear_error(tmp_path, monkeypatch):
    _fake_resource(monkeypatch, b"x")

    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    with pytest.raises(data_files.DownloadError) as e:
        data_files.download("cifar10", tmp_path, urlopen=offline, log=None)
    msg = str(e.value)
    assert "could not download" in msg and "name resolution" in msg and "MD5" in msg
    assert str(tmp_path) in msg and "cifar-10-python.tar.gz" in msg and "\n" not in msg
    assert _leftovers(tmp_path) == []


def test_download_interrupted_midway_leaves_nothing(tmp_path, monkeypatch):
    payload = os.urandom(2 * (1 << 20) + 5)
    _fake_resource(monkeypatch, payload)
    with pytest.raises(DataError, match="connection reset"):
        data_files.download("cifar10", tmp_path, urlopen=_serve(payload, fail_after=1 << 20), log=None)
    assert _leftovers(tmp_path) == []


class _SizedResponse(_Response):
    """A response that announces its length, as urllib's does."""

    def __init__(self, payload):
        super().__init__(payload)
        self.length = len(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_download_progress_bar(tmp_path, monkeypatch, capsys):
    payload = os.urandom(2 * (1 << 20) + 7)
    _fake_resource(monkeypatch, payload)
    (path,) = data_files.download("cifar10", tmp_path, urlopen=lambda url, timeout=None: _SizedResponse(payload),
                                  log=None, progress=True)
    assert path.read_bytes() == payload
    err = capsys.readouterr().err
    assert "cifar-10-python.tar.gz" in err and "%" in err  # a bar with a total
    _fake_resource(monkeypatch, b"small")
    data_files.download("cifar10", tmp_path / "b", urlopen=_serve(b"small"), log=None, progress=True)  # no length


def test_download_removes_part_files_of_a_killed_download(tmp_path, monkeypatch):
    import subprocess
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    killed = f".cifar-10-python.tar.gz.{dead}-0123abcd.part"
    running = f".cifar-10-python.tar.gz.{os.getpid()}-0123abcd.part"  # a download in progress: kept
    for name in (killed, running, ".mine.part"):
        (tmp_path / name).write_bytes(b"partial")
    _fake_resource(monkeypatch, b"whole file")
    data_files.download("cifar10", tmp_path, urlopen=_serve(b"whole file"), log=None)
    assert _leftovers(tmp_path) == sorted([".mine.part", running, "cifar-10-python.tar.gz"])


def test_download_to_a_full_disk_is_one_line(tmp_path, monkeypatch):
    _fake_resource(monkeypatch, b"x" * 100)
    real_open = open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: FullFile(real_open(p, mode, *a, **k))
                        if str(p).endswith(".part") else real_open(p, mode, *a, **k))
    with pytest.raises(DataError, match="No space left on device.*nothing was kept") as e:
        data_files.download("cifar10", tmp_path, urlopen=_serve(b"x" * 100), log=None)
    assert not isinstance(e.value, data_files.DownloadError) and _leftovers(tmp_path) == []


def test_download_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        data_files.download("mnist", tmp_path)


# ---------------------------------------------------------------------------
# load_dataset and default_data_dir
# ---------------------------------------------------------------------------


def test_load_dataset_generated(fake10, fake100):
    x, y, xt, yt, k = data.load_dataset("cifar10", fake10)
    assert k == 10 and x.shape == (100, 3, 32, 32) and yt.shape == (30,)
    assert data.load_dataset("cifar100", fake100)[4] == 100


def test_load_dataset_missing_says_where(tmp_path):
    with pytest.raises(DataError) as e:
        data.load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "download" in msg and "cifar-10-python.tar.gz" in msg and "\n" not in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg and "https://www.cs.toronto.edu/" in msg
    with pytest.raises(DataError, match="unknown data set"):
        data.load_dataset("imagenet", tmp_path)


def test_load_dataset_downloads_when_asked(tmp_path, monkeypatch):
    src = fake_data.write_fake_cifar10(tmp_path / "src", n_per_batch=4, n_test=5)
    tar = _make_tarball(src, tmp_path / "official.tar.gz")
    _fake_resource(monkeypatch, tar.read_bytes(), url=tar.as_uri())
    x, y, xt, yt, k = data.load_dataset("cifar10", tmp_path / "data", download=True)
    assert x.shape == (20, 3, 32, 32) and k == 10
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").is_file()


def test_default_data_dir_is_one_rule(tmp_path, monkeypatch):
    """--data-dir if given, else $MINISD_DATA, else ./data; no other folder is looked at."""
    monkeypatch.setenv("MINISD_DATA", str(tmp_path / "env"))
    assert data.default_data_dir(str(tmp_path / "given")) == tmp_path / "given"
    assert data.default_data_dir() == tmp_path / "env"  # need not exist yet
    monkeypatch.delenv("MINISD_DATA")
    assert data.default_data_dir() == Path("data")
    monkeypatch.setenv("MINISD_DATA", "")  # set but empty: as if unset
    assert data.default_data_dir() == Path("data")


def test_load_dataset_reads_the_folder_of_the_rule(fake10, monkeypatch):
    monkeypatch.setenv("MINISD_DATA", str(fake10))
    assert data.load_dataset("cifar10")[0].shape == (100, 3, 32, 32)
    monkeypatch.chdir(fake10)
    monkeypatch.delenv("MINISD_DATA")
    with pytest.raises(DataNotFoundError, match="data"):
        data.load_dataset("cifar10")  # ./data here holds nothing


# ---------------------------------------------------------------------------
# split, normalisation, mini-batches
# ---------------------------------------------------------------------------


def _toy(n=100, seed=0):
    x = np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    return x, np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("valid_size, k", [(10, 10), (1, 1), (np.int64(7), 7), (0.25, 25), (np.float32(0.5), 50),
                                           (0, 0), (0.0, 0)])
def test_split_sizes_and_disjointness(valid_size, k):
    x, y = _toy()
    (xtr, ytr), (xva, yva) = data.train_valid_split(x, y, valid_size, seed=5)
    assert len(yva) == k and len(ytr) == 100 - k and xva.shape == (k, 3, 32, 32)
    assert sorted(np.concatenate([ytr, yva]).tolist()) == list(range(100))
    assert np.array_equal(xtr, x[ytr]) and np.array_equal(xva, x[yva])  # images stay with their labels


def test_split_is_seeded():
    x, y = _toy()
    a = data.train_valid_split(x, y, 10, seed=1)[1][1]
    assert np.array_equal(a, data.train_valid_split(x, y, 10, seed=1)[1][1])
    assert not np.array_equal(a, data.train_valid_split(x, y, 10, seed=2)[1][1])


@pytest.mark.parametrize("bad", [-1, -0.5, 100, 150, 12.5, 1.0, 10.0, float("inf"), float("nan"), True, "10"])
def test_split_rejects_bad_sizes(bad):
    x, y = _toy()
    with pytest.raises(ValueError, match="valid_size"):
        data.train_valid_split(x, y, bad, seed=0)


def test_normalizer_definition():
    x, _ = _toy(40)
    norm = data.Normalizer.fit(x)
    mean = x.astype(np.float64).mean(axis=0)
    std = np.sqrt(((x - mean) ** 2).mean())                       # one scalar over all values
    assert norm.mean.shape == (3, 32, 32)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(norm.std, std, rtol=1e-12)
    z = norm.apply(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    exact, magnitude = _normalised_within_rounding(z, x, norm)
    np.testing.assert_allclose(exact.mean(axis=0), 0, atol=1e-12)  # the mean image maps to 0
    np.testing.assert_allclose(exact.std(), 1, rtol=1e-12)          # unit spread
    assert norm.apply(x, dtype=np.float64).dtype == np.float64
    chunked = data.Normalizer.fit(x, chunk=7)
    np.testing.assert_allclose(chunked.mean, norm.mean, rtol=1e-12)
    np.testing.assert_allclose(chunked.std, norm.std, rtol=1e-12)


def _normalised_within_rounding(z, x, norm):
    """float32 ``z = (x - mean) / std`` within rounding of float64: the mean rounded to float32,
    one subtraction, 1/std rounded, one product: 4 roundings of operands of size (|x| + |mean|) / std."""
    exact = (x.astype(np.float64) - norm.mean) / norm.std
    magnitude = (np.abs(x) + np.abs(norm.mean)) / norm.std
    assert minisd.gradcheck.rounding_error_ratio(z, exact, magnitude, 4) <= 1
    return exact, magnitude


def test_normalizer_state_dict_round_trip_through_npz(tmp_path):
    x, _ = _toy(20)
    norm = data.Normalizer.fit(x)
    np.savez(tmp_path / "ck.npz", **{f"data.{k}": v for k, v in norm.state_dict().items()})
    with np.load(tmp_path / "ck.npz") as f:
        back = data.Normalizer.from_state_dict({k[5:]: f[k] for k in f.files})
    assert np.array_equal(back.apply(x), norm.apply(x))


def test_normalizer_identical_images():
    x = np.full((3, 3, 32, 32), 9, np.uint8)
    norm = data.Normalizer.fit(x)
    assert norm.std == 1.0 and np.all(norm.apply(x) == 0)


def test_normalizer_on_device(device):
    x, _ = _toy(10)
    norm = data.Normalizer.fit(x).to(device)
    xd = backend.to_device(x, device)
    z = norm.apply(xd)
    assert backend.device_of(z) == backend.resolve_device(device)
    _normalised_within_rounding(backend.to_numpy(z), x, norm)
    fitted_there = data.Normalizer.fit(xd)
    np.testing.assert_allclose(fitted_there.mean, norm.mean, rtol=1e-12)


def test_one_error_class_across_the_data_modules(tmp_path):
    """``except minisd.data.DataError`` (train.py, the lessons) catches what the file readers raise."""
    assert data.DataError is data_files.DataError and data.DataNotFoundError is data_files.DataNotFoundError
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(data.DataError):
        data_files.read_cifar(tmp_path, "cifar10")
