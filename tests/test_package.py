"""The package as a user imports it: no heavy imports or side effects until a name is used."""

import subprocess
import sys

import pyro_irm


def test_importing_the_package_loads_none_of_the_heavy_libraries():
    code = (
        "import sys, pyro_irm\n"
        "print(sorted(m for m in ('torch', 'pyro', 'arviz', 'sklearn', 'matplotlib', 'transformers') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves():
    assert set(pyro_irm.__all__) == set(pyro_irm._EXPORTS)
    for name in pyro_irm.__all__:
        assert getattr(pyro_irm, name) is not None, name
    assert set(pyro_irm.__all__) <= set(dir(pyro_irm))


def test_plotting_leaves_matplotlib_s_backend_alone(tmp_path):
    code = (
        "import matplotlib\nmatplotlib.use('svg')\n"
        "from pyro_irm.analysis.plots import plot_fit_history\n"
        "from pyro_irm.inference.result import FitHistory\n"
        "history = FitHistory(train_loss=[1.0, 0.5], validation_elbo=[-1.0, -0.6])\n"
        f"plot_fit_history(history, {str(tmp_path / 'fit.png')!r})\n"
        "print(matplotlib.get_backend())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG"
