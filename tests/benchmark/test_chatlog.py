"""The chat-log benchmark's variants and its evaluation on a user's own log."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_irm.analysis.metrics import best_of_n_win_rate, feature_bias
from pyro_irm.benchmark.chatlog import (
    ChatLogBenchmarkConfig,
    available_variants,
    evaluation_split,
    run_log_benchmark,
    variant_data,
)
from pyro_irm.cli import main
from pyro_irm.data.chatlog_simulation import ChatLogConfig, simulate_chatlog


@pytest.fixture(scope="module")
def chatlog():
    return simulate_chatlog(1500, embedding_dim=8, config=ChatLogConfig(seed=0, label_fraction=0.3))


def test_variants_see_what_they_declare(chatlog):
    copied, thumbs, regenerated, dwell = chatlog.actions.unbind(1)
    naive, _, method = variant_data("naive", chatlog, 120.0)
    assert method == "naive" and torch.equal(naive.actions, torch.maximum(copied, thumbs))
    heuristic, _, _ = variant_data("naive_no_negative", chatlog, 120.0)
    assert torch.equal(heuristic.actions, torch.maximum(copied, thumbs) * (1 - regenerated))
    single, _, _ = variant_data("implicitrm_or", chatlog, 120.0)
    assert torch.equal(single.actions, torch.maximum(torch.maximum(copied, thumbs), (dwell > 120).float()))
    assert single.users is None and single.num_channels == 1
    full, config, _ = variant_data("implicitrm_labels", chatlog, 120.0)
    assert full.num_channels == 4 and full.users is not None and config.fit_labels
    assert not {"oracle", "oracle_engaged"} & set(available_variants(chatlog, has_truth=False))
    engaged, _, method = variant_data("oracle_engaged", chatlog, 120.0)
    assert method == "oracle" and len(engaged) == int(chatlog.truth.engagement.sum()) < len(chatlog)
    assert torch.all(engaged.truth.engagement == 1)
    assert "naive_no_negative" not in available_variants(
        replace(chatlog, actions=copied, channels=None), True
    )


def test_implicitrm_variants_also_choose_what_the_propensity_sees():
    from pyro_irm import ModelConfig

    config = ChatLogBenchmarkConfig(reward_widths=("64", "32"), propensity_inputs=("both", "context"))
    plain = config.model_configs(ModelConfig())
    assert [c.reward_hidden for c in plain] == [(64,), (32,)]
    assert {c.propensity_features for c in plain} == {"both"}
    assert len(ChatLogBenchmarkConfig(reward_widths=("64", "32")).model_configs(ModelConfig(), True)) == 2
    grid = config.model_configs(ModelConfig(), propensity=True)
    assert [(c.propensity_features, c.reward_hidden) for c in grid] == [
        ("both", (64,)), ("both", (32,)), ("context", (64,)), ("context", (32,))
    ]  # fmt: skip
    with pytest.raises(ValueError, match="propensity_inputs"):
        ChatLogBenchmarkConfig(propensity_inputs=("text",))


def test_evaluation_rows_are_whole_labelled_prompts_left_out_of_the_fit(chatlog):
    data = replace(chatlog, prompt_ids=torch.arange(len(chatlog)) // 3)
    training, evaluation = evaluation_split(data, 0.5)
    assert len(set(training.tolist()) & set(evaluation.tolist())) == 0
    assert len(training) + len(evaluation) == len(data)
    assert torch.isfinite(data.labels[evaluation]).all()
    held_prompts = set(data.prompt_ids[evaluation].tolist())
    # Every labelled row of a held-out prompt is evaluated, none of its labels is fitted.
    fitted_labels = torch.isfinite(data.labels[training])
    assert not (set(data.prompt_ids[training][fitted_labels].tolist()) & held_prompts)


def test_best_of_n_and_length_bias_by_hand():
    labels = np.array([1, 0, 0, 1, 0, 1, 1])
    rewards = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 5.0])
    prompts = np.array([0, 0, 0, 1, 1, 2, 3])  # prompt 2 and 3 have one row each: left out
    assert best_of_n_win_rate(labels, rewards, prompts) == 0.5  # prompt 0 picks a 1, prompt 1 a 0
    length = np.arange(7.0)
    assert feature_bias(length, length, -length) == pytest.approx(2.0)
    assert feature_bias(length, length, length) == pytest.approx(0.0)


@pytest.mark.slow
def test_log_benchmark_scores_held_out_labels(chatlog):
    data = replace(chatlog, prompt_ids=torch.arange(len(chatlog)) // 3)
    config = ChatLogBenchmarkConfig(
        seeds=1, max_epochs=15, variants=("naive", "implicitrm_channels", "implicitrm_labels")
    )
    result = run_log_benchmark(data, np.log1p(np.arange(len(data))), config)
    assert set(result.summary) == {"naive", "implicitrm_channels", "implicitrm_labels"}
    assert result.per_seed["implicitrm_channels"][0]["propensity_features"] in ("both", "context")
    # Multi-channel identification: clearly better than naive on this log (AUC over ~220 labels).
    assert (
        result.summary["implicitrm_channels"]["auc"]["mean"] > result.summary["naive"]["auc"]["mean"] + 0.05
    )


@pytest.mark.slow
def test_benchmark_command_on_a_users_own_log(tmp_path, ultrafeedback_rows, capsys):
    log = tmp_path / "chat.jsonl"
    source = ultrafeedback_rows.report.source
    simulate = ["simulate", "--dataset", "ultrafeedback", "--data-file", source, "--limit", "60"]
    assert main([*simulate, "--setting", "chatlog", "--chat-label-fraction", "0.5", "--out", str(log)]) == 0
    flags = ["--action-col", "copied", "--negative-action-col", "regenerated", "--user-col", "user_id"]
    out = tmp_path / "bench"
    code = main(
        ["benchmark", "--log", str(log), *flags, "--seeds", "1", "--chatlog-max-epochs", "3",
         "--encoder-max-length", "64", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert {"naive", "naive_no_negative", "implicitrm_channels", "implicitrm_users"} <= summary.keys()
    assert "oracle" not in summary
    printed = capsys.readouterr()
    assert "| implicitrm_users " in printed.out and "Mean action rates of the log:" in printed.out
    # per-seed progress is progress, not a warning
    assert "seed 1 of 1: naive " in printed.err and "WARNING" not in printed.err
