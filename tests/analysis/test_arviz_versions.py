"""The ArviZ conversion on ArviZ 1.x (Python >= 3.12), where pip can install it: the calls of
``pyro_irm/analysis/convert.py`` run in a fresh Python 3.12 environment with the newest ArviZ."""

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

CONVERT = Path(__file__).resolve().parents[2] / "pyro_irm" / "analysis" / "convert.py"
CHECK = Path(__file__).with_name("arviz1_check.py")


def _python_312_or_later() -> str | None:
    """A working interpreter of Python 3.12 or later (pyenv shims may name versions not installed)."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.1[2-9]*/bin/python")), reverse=True)
    candidates += [found for name in ("python3.13", "python3.12") if (found := shutil.which(name))]
    for python in candidates:
        probe = subprocess.run(
            [python, "-c", "import sys, venv; assert sys.version_info >= (3, 12)"], capture_output=True
        )
        if probe.returncode == 0:
            return python
    return None


@pytest.mark.slow
def test_conversion_calls_work_on_arviz_1(tmp_path):
    python = _python_312_or_later()
    if python is None:
        pytest.skip("no Python 3.12 or later on this machine for ArviZ 1.x")
    subprocess.run([python, "-m", "venv", str(tmp_path / "venv")], check=True)
    venv_python = str(tmp_path / "venv" / "bin" / "python")
    install = subprocess.run(
        [venv_python, "-m", "pip", "install", "--quiet", "arviz>=1.0"], capture_output=True, text=True
    )
    if install.returncode != 0:
        pytest.skip(f"cannot install ArviZ 1.x here: {install.stderr.strip()[-300:]}")
    done = subprocess.run([venv_python, str(CHECK), str(CONVERT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "arviz 1.x: ok" in done.stdout
