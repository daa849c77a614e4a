"""Where the lessons' CIFAR-10 comes from: minisd's one rule, then the sample shipped with minisd.

``lessons/_common.load_cifar10`` is what every lesson that trains calls: ``--data-dir`` if given,
else ``$MINISD_DATA``, else ``./data``; with no CIFAR-10 there, the real sample inside the package
(one line says so); generated images only with ``--fake-data``. Tested on the function itself,
with files in the official format written for the test.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from minisd.data import fake as fake_data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lessons"))  # _common imports nothing else of the lessons
spec = importlib.util.spec_from_file_location("lessons_common", ROOT / "lessons" / "_common.py")
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)


class FakeLesson:
    def __init__(self, **flags):
        self.args = argparse.Namespace(**{"data_dir": None, "fake_data": False, **flags})
        self.seed = 0


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder with no ./data and no $MINISD_DATA."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINISD_DATA", raising=False)
    return tmp_path


def test_no_data_anywhere_gives_the_real_sample(elsewhere, capsys):
    x, y, xt, yt, source = common.load_cifar10(FakeLesson(), 300, 200)
    out = capsys.readouterr().out
    assert source == "real CIFAR-10 (sample)" and x.shape == (300, 3, 32, 32) and len(yt) == 200
    assert "no CIFAR-10 in ./data: using the real sample shipped with minisd" in out and "GENERATED" not in out
    assert "download('cifar10', 'data')" in out  # and how to get the full set


def test_a_copy_in_dot_data_is_used(elsewhere, capsys):
    fake_data.write_fake_cifar10(elsewhere / "data", n_per_batch=20, n_test=30)  # official layout
    x, y, xt, yt, source = common.load_cifar10(FakeLesson(), None, None)
    assert source == "real CIFAR-10" and len(y) == 100 and len(yt) == 30
    assert "from ./data" in capsys.readouterr().out


def test_minisd_data_then_data_dir_take_precedence(elsewhere, monkeypatch, capsys):
    fake_data.write_fake_cifar10(elsewhere / "env", n_per_batch=4, n_test=10)
    fake_data.write_fake_cifar10(elsewhere / "given", n_per_batch=6, n_test=10)
    monkeypatch.setenv("MINISD_DATA", str(elsewhere / "env"))
    assert len(common.load_cifar10(FakeLesson(), None, None)[1]) == 20
    assert len(common.load_cifar10(FakeLesson(data_dir=str(elsewhere / "given")), None, None)[1]) == 30


def test_a_named_folder_without_cifar10_is_one_line_not_a_fallback(elsewhere, monkeypatch):
    with pytest.raises(SystemExit, match="no CIFAR-10 in .*absent .--data-dir.; leave it out"):
        common.load_cifar10(FakeLesson(data_dir=str(elsewhere / "absent")), None, None)
    monkeypatch.setenv("MINISD_DATA", str(elsewhere / "absent"))
    with pytest.raises(SystemExit, match="MINISD_DATA"):
        common.load_cifar10(FakeLesson(), None, None)


def test_generated_images_only_when_asked(elsewhere, capsys):
    *_, source = common.load_cifar10(FakeLesson(fake_data=True), 100, 100)
    assert source == "GENERATED stand-in" and "--fake-data" in capsys.readouterr().out


def test_asking_for_more_than_the_sample_holds_says_so(elsewhere, capsys):
    x, *_ = common.load_cifar10(FakeLesson(), 5000, None)
    assert len(x) == 2500
    assert "asks for 5,000 training images; the sample holds 2,500: using those" in capsys.readouterr().out
