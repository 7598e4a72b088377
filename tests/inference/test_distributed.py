"""Data-parallel fitting on Lightning Fabric: two CPU processes (gloo) share every minibatch and
average their gradients, which is the one-process fit up to the order of float additions."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("lightning")


def _fit(tmp_path, devices: int, *flags: str) -> tuple[np.ndarray, dict]:
    out = tmp_path / f"run{devices}"
    command = [sys.executable, "-m", "pyro_irm.cli", "fit", str(tmp_path / "log.jsonl"), "--embeddings"]
    command += [str(tmp_path / "emb.npy"), "--context-col", "position", "--max-epochs", "4", "--quiet"]
    command += ["--devices", str(devices), "--out", str(out), *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from pyro_irm.runs import Run

    rewards = Run.load(out).reward_model.score(np.load(tmp_path / "emb.npy")).numpy()
    return rewards, json.loads((out / "metrics.json").read_text())["fit"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    from pyro_irm import SimulationConfig, simulate
    from pyro_irm.data.logs import write_records

    root = tmp_path_factory.mktemp("ddp")
    data = simulate(SimulationConfig(num_rows=6000, embedding_dim=16, seed=0))
    rows = [
        {"prompt": f"p{i}", "response": f"r{i}", "action": int(a), "position": float(c[0])}
        for i, (a, c) in enumerate(zip(data.actions.numpy(), data.context.numpy(), strict=True))
    ]
    write_records(root / "log.jsonl", rows)
    np.save(root / "emb.npy", data.embeddings.numpy())
    return root


@pytest.mark.slow
@pytest.mark.parametrize("inference", ["fused", "amortized"])
def test_two_processes_fit_what_one_does(log_dir, inference):
    one, fit_one = _fit(log_dir, 1, "--inference", inference)
    two, fit_two = _fit(log_dir, 2, "--inference", inference)
    assert np.abs(one - two).max() < 1e-3, np.abs(one - two).max()
    assert fit_two["best_heldout_score_per_row"] == pytest.approx(
        fit_one["best_heldout_score_per_row"], abs=1e-4
    )
    assert fit_two["epochs"] == fit_one["epochs"]


def test_several_processes_need_the_embeddings_precomputed(log_dir, capsys):
    from pyro_irm.cli import main

    code = main(["fit", str(log_dir / "log.jsonl"), "--devices", "2", "--out", str(log_dir / "x"), "--quiet"])
    assert code == 2 and "embed the log first" in capsys.readouterr().err


@pytest.mark.slow
def test_a_two_process_fit_checkpoints_through_lightning_and_resumes(log_dir):
    """The first process writes the checkpoint with Fabric's checkpoint IO; the toolkit's loader
    reads it, and the same command run again resumes from it to the same model."""
    import torch

    checkpoints = log_dir / "checkpoints"
    first, _ = _fit(log_dir, 2, "--checkpoint-dir", str(checkpoints))
    state = torch.load(next(checkpoints.glob("*.pt")), map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and set(state) >= {"model", "optimizer", "identity", "history"}
    again, fit_again = _fit(log_dir, 2, "--checkpoint-dir", str(checkpoints))
    np.testing.assert_array_equal(first, again)
    assert fit_again["epochs"] == 4
