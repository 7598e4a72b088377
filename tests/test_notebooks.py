"""The notebooks run, top to bottom, on small data: they cannot rot."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SMALL = {
    "PYRO_IRM_NOTEBOOK_PAIRS": "60",
    "PYRO_IRM_NOTEBOOK_EPOCHS": "15",
    "PYRO_IRM_NOTEBOOK_ROWS": "3000",
    "PYRO_IRM_NOTEBOOK_STEPS": "120",
    "PYRO_IRM_NOTEBOOK_TEXT_PAIRS": "150",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in {
        **SMALL,
        "PYRO_IRM_NOTEBOOK_OUT": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path migration warning
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if name.startswith("01"):
        assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    if name.startswith("03"):  # each extension saved, and its claims asserted in the notebook itself
        assert {"stars", "position_decay"} <= {p.name for p in tmp_path.iterdir()}
    if name.startswith("04"):  # likewise, and each reloaded in a fresh process that trusted its module
        assert {"rater", "position", "users", "my_priors.py"} <= {p.name for p in tmp_path.iterdir()}
