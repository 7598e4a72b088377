"""Faults a user's input can cause end in exit 2 with the file, row and field named; outputs appear
complete or not at all; a terminated command exits as an interrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records


def _run_with_embeddings(tmp_path, rows=60, dim=6):
    rng = np.random.default_rng(0)
    log = tmp_path / "log.jsonl"
    write_records(
        log,
        [
            {"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(rng.random() < 0.4)}
            for i in range(rows)
        ],
    )
    embeddings = tmp_path / "log.npy"
    np.save(embeddings, rng.normal(size=(rows, dim)).astype(np.float32))
    run = tmp_path / "run"
    fit = ["fit", str(log), "--embeddings", str(embeddings), "--out", str(run), "--max-epochs", "2"]
    code = main([*fit, "--quiet", "--method", "naive"])
    assert code == 0
    return log, embeddings, run


def test_score_refuses_non_finite_embeddings_and_writes_nothing(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    values = np.load(embeddings)
    values[7, 3] = np.nan
    bad = tmp_path / "bad.npy"
    np.save(bad, values)
    out = tmp_path / "scores.jsonl"
    code = main(["score", str(run), str(log), "--embeddings", str(bad), "--out", str(out), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "bad.npy: row 7, column 3 is nan" in message and "Traceback" not in message
    assert not out.exists()


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    records = [{"a": 1}, {"a": object()}]  # the second cannot be written as JSON
    with pytest.raises(TypeError):
        write_records(target, records)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_records(target, [{"a": 1}])
    write_records(target, [{"a": 2}, {"a": 3}])  # replaces the file whole
    assert [json.loads(line)["a"] for line in target.read_text().splitlines()] == [2, 3]


@pytest.mark.slow
def test_sigterm_ends_a_fit_as_an_interruption(tmp_path):
    code = (
        "import sys; from pyro_irm.cli import main; "
        "sys.exit(main(['demo', '--rows', '60000', '--test-rows', '2000', '--epochs', '400', '--quiet']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(12)
    assert process.poll() is None, process.communicate()
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
