"""Faults a user's input can cause end in exit 2 with the file, row and field named; outputs appear
complete or not at all; a terminated command exits as an interrupted one."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pyro_irm.cli import main
from pyro_irm.cli.schema import read_log_from_args
from pyro_irm.data.logs import LogSchema, read_log, write_records


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


@pytest.mark.parametrize("value", [0, 1])
def test_a_log_with_one_class_of_action_is_refused(tmp_path, capsys, value):
    log = tmp_path / "log.jsonl"
    write_records(log, [{"prompt": "p", "response": f"r{i}", "action": value} for i in range(20)])
    embeddings = tmp_path / "log.npy"
    np.save(embeddings, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    for method in ("implicitrm", "ubpr"):
        code = main(["fit", str(log), "--embeddings", str(embeddings), "--out", str(tmp_path / method),
                     "--method", method, "--quiet"])  # fmt: skip
        assert code == 2
        assert f"is {value} on every row" in capsys.readouterr().err
        assert not (tmp_path / method).exists()


def test_skipping_most_rows_stops_and_drops_are_reported_even_when_quiet(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    # A 1-10 score in the label column: every row but one is "bad" when labels must be 0/1.
    rows = [{"prompt": "p", "response": f"r{i}", "action": i % 2, "label": 7 if i else 1} for i in range(20)]
    write_records(log, rows)
    code = main(["fit", str(log), "--out", str(tmp_path / "run"), "--skip-bad-rows", "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "19 of 20 rows (95.0%) do not fit the schema" in message and "--label-threshold" in message
    for row in rows:  # one bad row in twenty
        row["label"] = 1 if row["response"] != "r3" else 9
    write_records(log, rows)
    quiet = argparse.Namespace(quiet=True, skip_bad_rows=True, max_bad_fraction=0.1, split=None)
    kept = read_log_from_args(quiet, str(log), LogSchema())
    assert len(kept) == 19
    assert "dropped 1 (1 x label: 9 is not 0 or 1" in capsys.readouterr().err  # said, though quiet
    with pytest.raises(ValueError, match="more than the 1.0% allowed"):
        read_log(log, LogSchema(), on_error="skip", max_bad_fraction=0.01)
