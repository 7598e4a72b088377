"""Output paths, generated: every command that writes meets whatever already lies at its output path
(nothing, a file, an empty or a foreign directory, an earlier output, a link to a file, to a directory
or to nothing, a pipe, a path below a file). Whatever it meets, it either writes its whole output there
or exits 2 naming the path; it never prints a traceback, never replaces a link or what it points to,
never touches any other file and never leaves a temporary behind."""

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning"),
]

SITUATIONS = (
    "absent", "file", "empty-directory", "foreign-directory", "earlier-output", "link-to-file",
    "link-to-directory", "dangling-link", "pipe", "below-a-file",
)  # fmt: skip
# Each command that writes: its arguments before --out, and whether its output is a directory.
COMMANDS = {
    "score": (lambda i: ["score", i["run"], i["log"], "--embeddings", i["npy"]], False),
    "best-of-n": (lambda i: ["best-of-n", i["run"], i["log"], "--embeddings", i["npy"]], False),
    "simulate": (lambda i: ["simulate", "--dataset", "ultrafeedback", "--sample", "--limit", "20"], False),
    "fit": (
        lambda i: ["fit", i["log"], "--embeddings", i["npy"], "--method", "naive", "--max-epochs", "1"],
        True,
    ),
    "report": (lambda i: ["report", i["run"], "--log", i["log"], "--embeddings", i["npy"]], True),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    rows = [
        {"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(rng.random() < 0.4)} for i in range(40)
    ]
    write_records(root / "log.jsonl", rows)
    np.save(root / "log.npy", rng.normal(size=(40, 4)).astype(np.float32))
    fit = ["fit", str(root / "log.jsonl"), "--embeddings", str(root / "log.npy"), "--out", str(root / "run")]
    assert main([*fit, "--method", "naive", "--max-epochs", "2", "--quiet"]) == 0
    return {"run": str(root / "run"), "log": str(root / "log.jsonl"), "npy": str(root / "log.npy")}


def _state(root: Path) -> dict:
    """Every path under ``root`` with what it is: a link's target, a file's bytes, a directory."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[key] = ("link", os.readlink(path))
        elif path.is_file():
            state[key] = ("file", path.read_bytes())
        else:
            state[key] = ("dir" if path.is_dir() else "special", None)
    return state


def _make(situation: str, case: Path, name: str, command: str, inputs: dict) -> Path:
    """The output path of ``command`` in ``case``, with ``situation`` already lying there."""
    out = case / name
    target = case / "target"
    if situation not in ("absent", "below-a-file"):
        out.parent.mkdir(parents=True, exist_ok=True)
    if situation == "file":
        out.write_text("mine")
    elif situation == "empty-directory":
        out.mkdir()
    elif situation == "foreign-directory":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif situation == "earlier-output":
        arguments, _ = COMMANDS[command]
        assert main([*arguments(inputs), "--out", str(out), "--quiet"]) == 0
    elif situation == "link-to-file":
        target.write_text("mine")
        out.symlink_to(target)
    elif situation == "link-to-directory":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        out.symlink_to(target, target_is_directory=True)
    elif situation == "dangling-link":
        out.symlink_to(case / "nowhere")
    elif situation == "pipe":
        os.mkfifo(out)
    elif situation == "below-a-file":
        (case / "notes.txt").write_text("mine")
        out = case / "notes.txt" / name
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(sorted(COMMANDS)),
    situation=st.sampled_from(SITUATIONS),
    name=st.sampled_from(["out", "out.jsonl", "a b.csv", "nested/deeper/out.jsonl"]),
)
def test_an_output_is_written_whole_or_refused_by_name_and_nothing_else_changes(
    inputs, command, situation, name
):
    arguments, directory_output = COMMANDS[command]
    with tempfile.TemporaryDirectory() as scratch:
        case = Path(scratch)
        out = _make(situation, case, name, command, inputs)
        before = _state(case)
        error = io.StringIO()
        with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
            code = main([*arguments(inputs), "--out", str(out), "--quiet"])
        after = _state(case)
        message = error.getvalue()
        assert code in (0, 2) and "Traceback" not in message, (command, situation, message)
        written = out.relative_to(case).as_posix()
        untouched = {k: v for k, v in before.items() if not (k == written or k.startswith(written + "/"))}
        if situation == "absent" and (directory_output or "." in name):
            assert code == 0, (command, situation, message)
        if "link" in situation:
            assert code == 2 and before == after, (command, situation)  # a link and its target stay
        if code == 2:
            assert before == after, (command, situation)  # nothing written, no temporary left
            assert out.name in message, (command, situation, message)
            return
        assert {k: v for k, v in after.items() if k in untouched} == untouched
        assert set(after) - set(before) <= {written} | {k for k in after if k.startswith(written + "/")} | {
            p.relative_to(case).as_posix() for p in out.parents if case in p.parents
        }
        assert not out.is_symlink() and (out.is_dir() if directory_output else out.is_file())
        if situation == "absent" or (directory_output and situation in ("empty-directory", "earlier-output")):
            return
        # Anything else that was there was replaced only where the command may replace it.
        assert situation == "file" and not directory_output or situation == "earlier-output", (
            command,
            situation,
        )
