"""The benchmark protocol, its report, and the command that runs it."""

import json
from dataclasses import replace

import numpy as np
import pytest

from pyro_irm.benchmark import (
    METRICS,
    BenchmarkConfig,
    format_table,
    load_embedded_set,
    plot_benchmark,
    plot_sweep,
    run_benchmark,
    run_sweep,
)
from pyro_irm.benchmark.config import PROTOCOL_TRAINING, default_simulation
from pyro_irm.cli import main
from pyro_irm.cli.benchmark import parse_sweep

QUICK = dict(seeds=2, train=replace(PROTOCOL_TRAINING, max_epochs=4, batch_size=256))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synthetic():
    return load_embedded_set("synthetic", num_rows=1200)


@pytest.fixture(scope="module")
def quick_result(synthetic):
    config = BenchmarkConfig(methods=("naive", "ips", "dr", "implicitrm", "oracle"), **QUICK)
    return run_benchmark(synthetic, config)


def test_summary_has_every_metric_with_mean_and_spread(quick_result):
    summary = quick_result.summary
    assert set(summary) == {"naive", "ips", "implicitrm", "oracle"}
    for method, metrics in summary.items():
        assert len(quick_result.per_seed[method]) == 2
        for metric in METRICS:
            entry = metrics[metric]
            values = [run[metric] for run in quick_result.per_seed[method]]
            assert entry["mean"] == pytest.approx(np.mean(values))
            assert entry["std"] == pytest.approx(np.std(values, ddof=1))
    assert "dr" in quick_result.skipped


def test_seeds_change_the_feedback_but_a_rerun_repeats_the_numbers(synthetic, quick_result):
    runs = quick_result.per_seed["naive"]
    assert runs[0]["auc"] != runs[1]["auc"]
    again = run_benchmark(synthetic, replace(quick_result.config, methods=("naive",)))
    assert again.per_seed["naive"][0]["auc"] == runs[0]["auc"]


def test_gap_closed_is_the_share_of_the_naive_to_oracle_gap(quick_result):
    s = quick_result.summary
    for metric, better in (("auc", 1), ("mae", -1)):
        naive, oracle = s["naive"][metric]["mean"], s["oracle"][metric]["mean"]
        closed = quick_result.gap_closed("implicitrm", metric)
        if better * (oracle - naive) <= 0:
            assert closed is None  # naive at or beyond the oracle: no gap
        else:
            assert closed == pytest.approx((s["implicitrm"][metric]["mean"] - naive) / (oracle - naive))
    assert s["oracle"]["auc"]["mean"] > s["naive"]["auc"]["mean"]  # this data set has an AUC gap


def test_table_and_chart(quick_result, tmp_path):
    table = format_table(quick_result)
    header = [cell.strip() for cell in table.splitlines()[0].split("|")[1:6]]
    assert header == ["method", "MAE", "RMSE", "R^2", "AUC"]
    assert "never" not in table and "held-out ELBO" in table and "Not run: dr" in table
    figure = plot_benchmark(quick_result, tmp_path / "bars.png")
    assert len(figure.axes) == 2 and (tmp_path / "bars.png").read_bytes()[:8] == PNG_MAGIC


def test_observational_setting_uses_causalrm_defaults(synthetic):
    config = BenchmarkConfig(setting="observational", methods=("dr", "causalrm"), **QUICK)
    simulation = config.simulation_for(0)
    assert (simulation.observation_rate, simulation.eps1, simulation.eps0) == (0.2, 0.2, 0.1)
    assert config.applicable_methods() == ("dr", "causalrm")
    result = run_benchmark(synthetic, replace(config, seeds=1))
    assert set(result.summary) == {"dr", "causalrm"}
    assert "propensity" in result.nuisance_sources and "imputation" in result.nuisance_sources


def test_sweep_runs_each_value_and_plots(synthetic, tmp_path):
    config = BenchmarkConfig(methods=("naive",), **{**QUICK, "seeds": 1})
    results = run_sweep(synthetic, "alpha", [0.5, 0.05], config)
    assert sorted(results) == [0.05, 0.5]
    assert results[0.05].config.simulation.alpha == 0.05
    plot_sweep(results, "alpha", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="cannot sweep"):
        run_sweep(synthetic, "seeds", [1], config)


def test_parse_sweep():
    assert parse_sweep("alpha=0.5,0.2") == ("alpha", [0.5, 0.2])
    for bad in ("alpha", "gamma=1", "alpha=x"):
        with pytest.raises(ValueError):
            parse_sweep(bad)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        BenchmarkConfig(methods=("naive", "magic"))


def test_command_prints_the_table_and_writes_json_and_png(tmp_path, capsys):
    out, summary = tmp_path / "bench", tmp_path / "summary.json"
    code = main(
        ["benchmark", "--dataset", "synthetic", "--num-rows", "800", "--methods", "naive,implicitrm"]
        + ["--seeds", "2", "--max-epochs", "3", "--out", str(out), "--json", str(summary), "--quiet"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| implicitrm " in printed and "| naive " in printed
    payload = json.loads(summary.read_text())
    assert set(payload) == {"naive", "implicitrm"}
    assert set(payload["naive"]["auc"]) == {"mean", "std"}
    assert (out / "benchmark.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "results.json").read_text())["config"]["seeds"] == 2


def test_command_on_real_text(tmp_path, capsys, ultrafeedback_rows, minilm):
    """The UltraFeedback sample's first pairs, embedded with the default encoder (cached in tmp)."""
    source = ultrafeedback_rows.report.source
    code = main(
        ["benchmark", "--dataset", "ultrafeedback", "--data-file", source, "--limit", "40"]
        + ["--methods", "naive", "relmf", "ubpr", "--seeds", "1", "--max-epochs", "2"]
        + ["--encoder-max-length", "64", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| ubpr " in printed and "ultrafeedback" in printed


def test_bad_sweep_exits_2(capsys):
    assert main(["benchmark", "--dataset", "synthetic", "--sweep", "beta=1", "--quiet"]) == 2
    assert "--sweep" in capsys.readouterr().err


@pytest.mark.slow
def test_as_preference_bias_grows_naive_degrades_more_than_implicitrm():
    """A response feature unrelated to quality drives who acts, from not at all to strongly."""
    data = load_embedded_set("synthetic", num_rows=6000)
    config = BenchmarkConfig(
        methods=("naive", "implicitrm"),
        seeds=2,
        train=replace(PROTOCOL_TRAINING, max_epochs=30),
        simulation=replace(default_simulation(), propensity_form="logistic"),
    )
    results = run_sweep(data, "feature_strength", [0.0, 4.0], config)

    def auc(strength, method):
        return results[strength].summary[method]["auc"]["mean"]

    naive_drop = auc(0.0, "naive") - auc(4.0, "naive")
    implicitrm_drop = auc(0.0, "implicitrm") - auc(4.0, "implicitrm")
    assert naive_drop > 0.03, naive_drop
    assert implicitrm_drop < naive_drop / 2, (implicitrm_drop, naive_drop)
    assert auc(4.0, "implicitrm") > auc(4.0, "naive") + 0.03


def test_a_fit_that_diverges_is_scored_n_a_and_named_not_fatal(synthetic, monkeypatch):
    """uPU's risk can run away (the fit refuses to keep weights); the benchmark goes on with the
    other methods, scores the diverged seeds NaN and says so in its notes."""
    from pyro_irm.benchmark import protocol
    from pyro_irm.inference.svi import FitDivergedError

    real_fit = protocol.fit

    def fit(data, config, *args, **kwargs):
        if config.method == "upu" and config.seed == 0:
            raise FitDivergedError("uPU's risk ran away below zero")
        return real_fit(data, config, *args, **kwargs)

    monkeypatch.setattr(protocol, "fit", fit)
    result = run_benchmark(synthetic, BenchmarkConfig(methods=("naive", "upu"), **QUICK))
    assert np.isnan(result.per_seed["upu"][0]["auc"]) and np.isfinite(result.per_seed["upu"][1]["auc"])
    assert result.summary["upu"]["auc"]["mean"] == result.per_seed["upu"][1]["auc"]
    assert any("upu: the fit diverged in 1 of 2 seeds" in note for note in result.warnings)
    assert "upu" in format_table(result)


def test_a_users_model_joins_the_benchmark_under_its_own_name(synthetic):
    """Each seed builds a fresh model of the user's (here ImplicitRM with a narrower engagement
    network), which its method's inference trains on that seed's rows; its row is scored as the
    methods' are (the last seed's model reproduces it) and lands near ImplicitRM's."""
    import torch

    from pyro_irm.analysis import auc
    from pyro_irm.benchmark import UserModel
    from pyro_irm.models import ImplicitFeedbackModel, ModelConfig, PropensityNetwork
    from pyro_irm.models.implicit import propensity_input_dim

    built = []

    def narrow(train):
        width = propensity_input_dim(ModelConfig(), train.embedding_dim, train.context_dim)
        propensity = PropensityNetwork(width, (16,), depends_on_preference=False)
        model = ImplicitFeedbackModel(
            train.embedding_dim, train.context_dim, ModelConfig(), propensity=propensity
        )
        built.append(model)
        return built[-1]

    config = BenchmarkConfig(methods=("naive", "implicitrm"), **QUICK)
    result = run_benchmark(synthetic, config, user_models=[UserModel("narrow_g", "implicitrm", narrow)])
    assert list(result.summary) == ["naive", "implicitrm", "narrow_g"] and len(built) == 2
    assert built[0] is not built[1] and built[-1].propensity.hidden == (16,)
    test = torch.from_numpy(np.ascontiguousarray(synthetic.test.embeddings))
    probability = torch.sigmoid(built[-1].reward_logits(test)).detach().numpy()
    assert result.per_seed["narrow_g"][-1]["auc"] == pytest.approx(
        auc(synthetic.preference(synthetic.test), probability), abs=1e-9
    )
    summary = result.summary
    assert abs(summary["narrow_g"]["auc"]["mean"] - summary["implicitrm"]["auc"]["mean"]) < 0.03
    with pytest.raises(ValueError, match="taken"):
        run_benchmark(synthetic, config, user_models=[UserModel("naive", "implicitrm", narrow)])


def test_a_method_below_naive_is_called_worse_than_naive_not_a_negative_gap(quick_result):
    """The notes say 'worse than naive' where ImplicitRM's mean is below naive's, never 'closes -174%'."""
    per_seed = {m: [dict(r) for r in runs] for m, runs in quick_result.per_seed.items()}
    for run in per_seed["implicitrm"]:
        run["auc"] = min(r["auc"] for r in per_seed["naive"]) - 0.1
    worse = replace(quick_result, per_seed=per_seed)
    assert worse.gap_closed("implicitrm", "auc") < 0
    table = format_table(worse)
    assert "ImplicitRM is worse than naive on AUC" in table and "closes -" not in table
