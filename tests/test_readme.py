"""Every Python snippet of the README runs, in order, from a directory holding only what a bare clone
has (its examples/ folder; no ../shared, no runs/). The one snippet that loads an export made on a
GPU from a Llama-3 reward model finds, where the README's commands would have written it, the same
kind of export made from a tiny random Llama by those commands."""

import re
import shutil
from pathlib import Path

import pytest

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")


def test_the_readme_has_the_snippets_this_test_runs():
    assert len(SNIPPETS) == 7 and any("runs/rm/hf" in snippet for snippet in SNIPPETS)


def _stock_export(tiny_llama: Path, directory: Path) -> None:
    """runs/rm/hf as the README's embed, fit and export commands write it, from a tiny Llama."""
    rows = [{"prompt": f"question {i % 5}", "response": "helpful answer" if i % 3 else "wrong",
             "copied": i % 3 % 2, "regenerated": int(i % 3 == 0)} for i in range(40)]  # fmt: skip
    write_records(directory / "chat_log.jsonl", rows)
    common = ["--encoder", str(tiny_llama), "--encoder-max-length", "32", "--quiet"]
    assert main(["fit", str(directory / "chat_log.jsonl"), "--reward-head", "linear", "--out",
                 str(directory / "runs/rm/run"), "--action-col", "copied", "--negative-action-col",
                 "regenerated", "--max-epochs", "2", *common]) == 0  # fmt: skip
    assert main(["export", str(directory / "runs/rm/run"), "--out", str(directory / "runs/rm/hf"),
                 "--format", "stock", "--quiet"]) == 0  # fmt: skip


@pytest.mark.slow
def test_every_python_snippet_of_the_readme_runs_from_a_bare_clone(tmp_path, monkeypatch, tiny_decoders):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_IRM_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    for number, snippet in enumerate(SNIPPETS, start=1):
        if "runs/rm/hf" in snippet:
            _stock_export(tiny_decoders["llama"], tmp_path)
        code = compile(snippet, f"README.md, Python snippet {number}", "exec")
        exec(code, namespace)  # a failure names the snippet and its line
    # what the snippets compute is what they say
    assert namespace["groups"].shape[1] == 4
    assert set(namespace["study"].summary) == {"naive", "implicitrm", "oracle"}
    assert namespace["rewards"].shape == (1,)
    assert len(namespace["log"]) == 300
