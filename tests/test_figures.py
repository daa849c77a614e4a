"""docs/figures/make_figures.py draws the README's and lessons 05/12's explanatory figures."""
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "figures" / "make_figures.py"
NAMES = ("stochastic_depth.png", "dense_block.png")


def test_the_script_writes_both_figures(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    for name in NAMES:
        image = mpimg.imread(tmp_path / name)
        height, width = image.shape[:2]
        assert width > 1000 and height > 800, (name, image.shape)
        assert image[..., :3].std() > 0.05, f"{name} is blank"  # something was drawn


def test_the_committed_figures_exist():
    """The READMEs embed the committed PNGs: regenerate with the script when it changes."""
    for name in NAMES:
        assert (SCRIPT.parent / name).stat().st_size > 10_000, name
