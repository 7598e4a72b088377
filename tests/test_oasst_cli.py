"""OpenAssistant trees on the command line: fit finds the format, evaluate scores sibling ranks with
intervals over trees, score reads the format the run was fit with, and the real-reaction benchmark
runs on the bundled sample."""

import json

import numpy as np
import pytest

from pyro_irm.analysis.metrics import rank_metrics
from pyro_irm.cli import main
from pyro_irm.data import oasst_sample, read_log

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning"),
]
SAMPLE = str(oasst_sample())


@pytest.fixture(scope="module")
def oasst_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("oasst")
    common = ["--cache-dir", str(root / "cache"), "--encoder-max-length", "64", "--quiet"]
    assert main(["fit", SAMPLE, "--out", str(root / "run"), "--max-epochs", "10", *common]) == 0
    return root, common


def test_fit_reads_the_trees_and_the_run_remembers_the_format(oasst_run):
    root, common = oasst_run
    info = json.loads((root / "run" / "run.json").read_text())
    assert info["schema"]["log_format"] == "oasst"
    assert info["schema"]["declared_channels"] == ["+1:count", "-1:count:negative", "red_flag:count:negative"]
    assert main(["score", str(root / "run"), SAMPLE, "--out", str(root / "scores.jsonl"), *common[:2]]) == 0
    assert len((root / "scores.jsonl").read_text().splitlines()) == 687


def test_evaluate_reports_sibling_agreement_with_intervals_over_trees(oasst_run, capsys):
    root, common = oasst_run
    capsys.readouterr()
    out = root / "metrics.json"
    assert main(["evaluate", str(root / "run"), "--log", SAMPLE, "--resamples", "60", "--json", str(out),
                 *common[:2]]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "sibling agreement" in printed and "754 pairs of replies to one message" in printed
    assert "resamples of whole trees" in printed
    metrics = json.loads(out.read_text())["run"]
    # The figure is the share of ranked sibling pairs the run's own scores order as people did.
    log = read_log(SAMPLE)
    assert main(["score", str(root / "run"), SAMPLE, "--out", str(root / "again.jsonl"), *common[:2]]) == 0
    rewards = np.array(
        [json.loads(line)["reward"] for line in (root / "again.jsonl").read_text().splitlines()]
    )
    expected = rank_metrics(log.ranks, rewards, log.prompt_ids)["sibling_agreement"]
    assert metrics["sibling_agreement"] == pytest.approx(expected, abs=1e-6)
    low, high = metrics["intervals"]["sibling_agreement"]
    assert low < metrics["sibling_agreement"] < high and high - low < 0.2


def test_the_real_reaction_benchmark_runs_on_the_bundled_sample(oasst_run, capsys):
    root, common = oasst_run
    out = root / "benchmark"
    variants = ["naive", "implicitrm_channels", "supervised_ranks"]
    assert main(["benchmark", "--dataset", "oasst", "--trees-variants", *variants, "--trees-folds", "2",
                 "--trees-resamples", "40", "--trees-max-epochs", "5", "--trees-reward-widths", "16",
                 "--out", str(out), *common]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]) == {"naive", "implicitrm_channels", "supervised_ranks"}
    assert set(results["versus_naive"]) == {"implicitrm_channels", "supervised_ranks"}
    for metrics in results["metrics"].values():
        assert metrics["sibling_pairs"] == 754  # every ranked pair is scored once, out of fold
    assert "agreement vs naive" in (out / "table.md").read_text()
