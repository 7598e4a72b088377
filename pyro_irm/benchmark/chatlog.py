"""The chat-log benchmark: several channels, users and a few labels on responses of known quality.

For each seed, :mod:`pyro_irm.data.chatlog_simulation` draws a chat log on the training responses (who acts
is driven by length, code blocks, position and the user, not by quality alone); each variant below
is fit on what it is given of that log, and every variant is scored on the test responses against
their clean labels. Model selection sees only the log (held-out ELBO or held-out risk).

Variants (what a user with such a log could fit):

* ``naive``: a classifier of "any positive action" (copied OR thumbs_up);
* ``naive_no_negative``: the heuristic label "a positive action and no regenerate";
* ``implicitrm_one_channel``: the four-group model on the first positive channel (copy) alone;
* ``implicitrm_or``: the four-group model on copied OR thumbs_up OR dwell above a threshold, one
  channel (the best a user could do before channels were declared);
* ``implicitrm_channels``: every channel declared (two positive, one negative, dwell continuous);
* ``implicitrm_users``: the same with the per-user engagement effect;
* ``implicitrm_users_spread``: the same with the users' spread learned (a hierarchical effect);
* ``implicitrm_labels``: the same with the labelled rows' preference in the fit;
* ``oracle``: the same network trained on the true preference of every training row;
* ``oracle_engaged``: the true preference of the engaged rows only. Silent rows fire no binary
  action, so this is about the most any estimator can learn from the actions: a ceiling for the
  implicit variants, where ``oracle`` is not one.

Every ImplicitRM variant sees the same context columns (position, log length, code block). Every
variant chooses its reward network's width among ``reward_widths`` by its own held-out score (and,
given several ``propensity_inputs``, each ImplicitRM variant what its propensity network sees).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from pyro_irm.analysis.metrics import best_of_n_win_rate, feature_bias, label_metrics
from pyro_irm.benchmark.config import (
    CHATLOG_VARIANTS,
    REMEDY_SETTINGS,
    VARIANT_MODEL_SETTINGS,
    ChatLogBenchmarkConfig,
)
from pyro_irm.benchmark.datasets import EmbeddedSet, ScoredSplit
from pyro_irm.channels import ChannelSpec
from pyro_irm.data.chatlog_simulation import ChatLogConfig, chatlog_feedback
from pyro_irm.data.feedback import FeedbackData
from pyro_irm.estimators import ESTIMATORS, get_estimator
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.svi import fit_selected
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.identifiability import IdentifiabilityWarning
from pyro_irm.models.reward_model import RewardModel
from pyro_irm.tables import markdown_table, mean_std

logger = logging.getLogger(__name__)

CHATLOG_METRICS = (
    "auc",
    "pairwise_accuracy",
    "best_of_n",
    "log_loss",
    "ece",
    "length_bias",
    "mae",
)


@dataclass
class ChatLogBenchmarkResult:
    """Per-seed metrics ``{variant: [{metric: value}]}`` and their mean and standard deviation."""

    per_seed: dict[str, list[dict[str, float | str]]]
    summary: dict[str, dict[str, dict[str, float]]]
    description: str
    seconds: float
    rates: dict[str, float]
    simulated: bool = True  # the actions were simulated (False: a user's own log)


def available_variants(base: FeedbackData, has_truth: bool) -> tuple[str, ...]:
    """The variants that apply to a log: a negative channel, users, labels and (for the oracle)
    the truth of every row are needed by the variants that use them."""
    skip = set()
    if not base.channel_columns("negative"):
        skip.add("naive_no_negative")
    if base.users is None:
        skip.update({"implicitrm_users", "implicitrm_users_spread"})
    if base.labels is None or not torch.isfinite(base.labels).any():
        skip.add("implicitrm_labels")
    if not has_truth:
        skip.update({"oracle", "oracle_engaged"})
    if base.context is None:
        skip.update(REMEDY_SETTINGS)  # every remedy acts on the context
    return tuple(v for v in (*CHATLOG_VARIANTS, *REMEDY_SETTINGS) if v not in skip)


def variant_data(
    variant: str, base: FeedbackData, dwell_threshold: float
) -> tuple[FeedbackData, TrainConfig, str]:
    """What ``variant`` fits, from the log's declared channels: its data, settings and method."""
    columns = base.action_matrix
    positive = base.action
    continuous = base.channel_columns("positive", "continuous")
    one = (ChannelSpec("action"),)
    single = dict(channels=one, users=None)
    if variant == "naive":
        return replace(base, actions=positive, **single), TrainConfig(method="naive"), "naive"
    if variant == "naive_no_negative":
        return replace(base, actions=base.action_without_negative(), **single), TrainConfig(), "naive"
    if variant == "oracle":
        return replace(base, actions=positive, **single), TrainConfig(), "oracle"
    if variant == "oracle_engaged":
        # The truth on the rows whose user engaged: what an estimator could learn from the actions
        # if they told the preference of every engaged row exactly, since silent rows tell little.
        engaged = torch.nonzero(base.truth.engagement > 0.5).squeeze(1)
        return replace(base.subset(engaged), actions=positive[engaged], **single), TrainConfig(), "oracle"
    if variant == "implicitrm_one_channel":
        return _first_positive_channel(base), TrainConfig(), "implicitrm"
    if variant == "implicitrm_or":
        acted = positive
        if continuous:
            acted = torch.maximum(acted, (columns[:, continuous[0]] > dwell_threshold).float())
        return replace(base, actions=acted, **single), TrainConfig(), "implicitrm"
    if variant == "implicitrm_channels":
        return replace(base, users=None), TrainConfig(), "implicitrm"
    if variant == "implicitrm_users":
        return base, TrainConfig(), "implicitrm"
    if variant == "implicitrm_users_spread":  # the spread learned (VARIANT_MODEL_SETTINGS), globals faster
        return base, TrainConfig(global_learning_rate=3e-2), "implicitrm"
    if variant == "implicitrm_labels":
        return base, TrainConfig(fit_labels=True), "implicitrm"
    if variant == "implicitrm_no_context":
        return replace(base, users=None, context=None, context_names=None), TrainConfig(), "implicitrm"
    if variant in REMEDY_SETTINGS:
        return _first_positive_channel(base), TrainConfig(), "implicitrm"
    if variant in ESTIMATORS:  # another estimator, on the one combined action
        return replace(base, actions=positive, **single), TrainConfig(method=variant), variant
    raise ValueError(f"unknown variant {variant!r}")


def _first_positive_channel(base: FeedbackData) -> FeedbackData:
    """The log with only its first positive binary or count channel (as it was declared)."""
    first = base.acted_columns("positive")[0]
    return replace(base, actions=base.action_matrix[:, first], channels=(base.channels[first],), users=None)


CHECK_FIGURES = ("warned", "context_information", "context_r2")


def _any_finite(runs, metric: str) -> bool:
    return any(np.isfinite(m[metric]) for m in runs)


def _check_figures(check) -> dict[str, float]:
    """The identification check's figures of a fit, as benchmark metrics (NaN where it did not run)."""
    if check is None:
        return {"warned": float("nan"), "context_information": float("nan"), "context_r2": float("nan")}
    return {
        "warned": float(not check.identified and not check.assumed),
        "context_information": max(check.context_information.values()),
        "context_r2": max(check.context_r2.values()),
    }


def one_channel_log(base: FeedbackData) -> FeedbackData:
    """The one-channel-context setting's log: the copy channel alone, the context columns the
    embedding also encodes (length, code block; not the display position), no users, the labels."""
    copied = base.channel_columns("positive")[0]
    keep = [k for k, name in enumerate(base.context_names) if name != "position"]
    return replace(
        base,
        actions=base.action_matrix[:, copied],
        channels=(ChannelSpec(base.channels[copied].name),),
        users=None,
        context=base.context[:, keep],
        context_names=tuple(base.context_names[k] for k in keep),
    )


def draw_chatlog(split: ScoredSplit, threshold: float, config: ChatLogConfig) -> FeedbackData:
    """The chat log of one seed on ``split`` (:func:`~pyro_irm.data.chatlog_simulation.chatlog_feedback`)."""
    preference = torch.as_tensor(split.scores > threshold).float()
    return chatlog_feedback(
        torch.as_tensor(split.embeddings),
        preference,
        torch.as_tensor(split.scores),
        torch.as_tensor(split.log_length).float(),
        torch.as_tensor(split.has_code).float(),
        config,
        prompt_ids=torch.as_tensor(split.prompt_ids),
    )


def reward_metrics(
    rewards: torch.Tensor,
    labels: np.ndarray,
    prompt_ids: np.ndarray,
    log_length: np.ndarray,
    graded: np.ndarray | None = None,
) -> dict[str, float]:
    """The chat-log metrics of rewards ``(N,)`` against 0/1 ``labels``. ``graded`` is the graded
    true score where there is one: it orders pairs within prompt and is what the length bias is
    measured against (a continuous truth, so that a continuous reward is not compared with a 0/1
    variable, whose rank correlation is attenuated by ties); the labels stand in without it."""
    metrics = label_metrics(labels, torch.sigmoid(rewards).numpy(), prompt_ids, graded)
    return {
        "auc": metrics["auc"],
        "pairwise_accuracy": metrics["pairwise_accuracy"],
        "best_of_n": best_of_n_win_rate(labels, rewards.numpy(), prompt_ids),
        "log_loss": metrics["log_loss"],
        "ece": metrics["ece"],
        "length_bias": feature_bias(rewards.numpy(), log_length, labels if graded is None else graded),
        "mae": metrics["mae"],
    }


def run_chatlog_benchmark(
    data: EmbeddedSet,
    config: ChatLogBenchmarkConfig | None = None,
    chatlog: ChatLogConfig | None = None,
    model_config: ModelConfig | None = None,
    progress: bool = False,
    one_channel_context: bool = False,
) -> ChatLogBenchmarkResult:
    """Fit every variant on ``config.seeds`` chat logs drawn on ``data.train``; score ``data.test``.

    With ``one_channel_context``, the one-channel-context setting: engagement follows the response's
    length and code block alone (no display position, no users), and each log keeps the copy
    channel alone with those two context columns (:func:`one_channel_log`), the labels aside."""
    config = config or ChatLogBenchmarkConfig()
    chatlog = replace(chatlog or ChatLogConfig(), label_fraction=config.label_fraction)
    shape = (lambda log: log) if not one_channel_context else one_channel_log
    if one_channel_context:
        # Engagement follows length (twice the chat-log default) and code blocks alone; a copy
        # says preferred (an engaged user copies 73% of preferred responses, 2% of the others),
        # so the split of acting between preference and engagement is the only question.
        chatlog = replace(
            chatlog, position_effect=0.0, user_activity=0.0, length_effect=2.0,
            copy_logit=-4.0, copy_effect=5.0, copy_code_effect=0.0,
        )  # fmt: skip
    if data.train.log_length is None:
        raise ValueError(f"{data.name}: the chat-log benchmark needs response lengths and code flags")
    test_embeddings = torch.as_tensor(data.test.embeddings)
    test_labels = data.preference(data.test)
    return compare_variants(
        lambda seed: shape(draw_chatlog(data.train, data.threshold, replace(chatlog, seed=seed))),
        lambda model: reward_metrics(
            model.score(test_embeddings),
            test_labels,
            data.test.prompt_ids,
            data.test.log_length,
            data.test.scores,
        ),
        config,
        model_config,
        data.description,
        has_truth=True,
        progress=progress,
    )


def run_log_benchmark(
    data: FeedbackData,
    log_length: np.ndarray,
    config: ChatLogBenchmarkConfig | None = None,
    model_config: ModelConfig | None = None,
    evaluation_fraction: float = 0.5,
    description: str = "",
    progress: bool = False,
) -> ChatLogBenchmarkResult:
    """The variants on a user's own log with explicit labels on some rows.

    The labelled rows of a random ``evaluation_fraction`` of the prompts are the evaluation set:
    their rows are left out of every fit (actions and labels alike) and their labels are what the
    variants are scored against. ``implicitrm_labels`` fits the labels of the other rows only.
    ``log_length`` ``(N,)`` is each response's log length (for the length bias).
    """
    config = config or ChatLogBenchmarkConfig()
    if data.labels is None or not torch.isfinite(data.labels).any():
        raise ValueError("the log has no explicit labels to evaluate against (--label-col)")
    training, evaluation = evaluation_split(data, evaluation_fraction)
    if len(evaluation) < 2 or len(training) < 2:
        raise ValueError(
            f"the log has {int(torch.isfinite(data.labels).sum())} labelled rows; too few to hold "
            "out an evaluation set"
        )
    train = data.subset(training)
    test = data.subset(evaluation)
    labels = test.labels.numpy()
    test_prompts = test.prompt_ids.numpy() if test.prompt_ids is not None else np.arange(len(test))
    test_length = np.asarray(log_length)[evaluation.numpy()]

    def evaluate(model) -> dict[str, float]:
        return reward_metrics(model.score(test.embeddings), labels, test_prompts, test_length)

    description = (
        f"{description or 'log'}: {len(train)} rows to fit, {len(test)} labelled rows held out "
        f"(prompts of {evaluation_fraction:.0%}) to evaluate"
    )
    return compare_variants(
        lambda seed: train, evaluate, config, model_config, description, has_truth=False, progress=progress
    )


def evaluation_split(data: FeedbackData, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training rows, evaluation rows)``: the labelled rows of a random ``fraction`` of the
    prompts are held out whole; every other row (labelled or not) is for fitting."""
    prompts = data.prompt_ids if data.prompt_ids is not None else torch.arange(len(data))
    unique = torch.unique(prompts)
    held = unique[torch.rand(len(unique), generator=torch.Generator().manual_seed(seed)) < fraction]
    labelled = (
        torch.isfinite(data.labels) if data.labels is not None else torch.zeros(len(data), dtype=torch.bool)
    )
    in_evaluation = torch.isin(prompts, held) & labelled
    return (~in_evaluation).nonzero().squeeze(-1), in_evaluation.nonzero().squeeze(-1)


def compare_variants(
    draw: Callable[[int], FeedbackData],
    evaluate: Callable[[RewardModel], dict[str, float]],
    config: ChatLogBenchmarkConfig,
    model_config: ModelConfig | None,
    description: str,
    has_truth: bool,
    progress: bool = False,
) -> ChatLogBenchmarkResult:
    """Fit each applicable variant on ``draw(seed)`` for every seed and ``evaluate`` its model."""
    model_config = model_config or ModelConfig()
    started = time.perf_counter()
    per_seed: dict[str, list[dict[str, float | str]]] = {}
    rates: dict[str, list[float]] = {}
    for seed in range(config.seeds):
        base = draw(seed)
        for k, channel in enumerate(base.channels):
            if channel.kind == "binary":
                rates.setdefault(channel.name, []).append(float(base.action_matrix[:, k].mean()))
        if base.truth is not None:
            rates.setdefault("engaged", []).append(float(base.truth.engagement.mean()))
        applicable = available_variants(base, has_truth and base.truth is not None)
        for variant in (v for v in config.variants if v in applicable):
            variant_rows, train_config, method = variant_data(variant, base, config.dwell_threshold)
            train_config = replace(
                train_config, method=method, seed=seed, max_epochs=config.max_epochs, progress=False
            )
            fit_started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", IdentifiabilityWarning)
                candidates = config.model_configs(
                    replace(model_config, **VARIANT_MODEL_SETTINGS.get(variant, {})),
                    propensity=get_estimator(method).latent_groups and variant_rows.context is not None,
                )
                result, chosen = fit_selected(variant_rows, train_config, candidates)
            metrics = evaluate(result.reward_model)
            metrics.update(_check_figures(result.identification))
            metrics["seconds"] = time.perf_counter() - fit_started
            metrics["reward_width"] = float(chosen.reward_hidden[0])
            metrics["propensity_features"] = chosen.propensity_features
            per_seed.setdefault(variant, []).append(metrics)
            line = (
                f"seed {seed + 1} of {config.seeds}: {variant:<22} auc {metrics['auc']:.4f} length bias "
                f"{metrics['length_bias']:+.3f} reward {' '.join(map(str, chosen.reward_hidden))} "
                f"propensity {chosen.propensity_features} ({metrics['seconds']:.0f} s)"
            )
            if progress:  # progress, on the terminal's error stream: not a warning
                print(line, file=sys.stderr, flush=True)
            logger.info(line)
    summary = {
        variant: {
            metric: {
                "mean": float(np.nanmean([m[metric] for m in runs]))
                if _any_finite(runs, metric)
                else float("nan"),
                "std": float(np.nanstd([m[metric] for m in runs], ddof=1))
                if len(runs) > 1 and _any_finite(runs, metric)
                else 0.0,
            }
            for metric in (*CHATLOG_METRICS, "seconds", *CHECK_FIGURES)
            if metric in runs[0]
        }
        for variant, runs in per_seed.items()
    }
    return ChatLogBenchmarkResult(
        per_seed=per_seed,
        summary=summary,
        description=description,
        seconds=time.perf_counter() - started,
        rates={k: float(np.mean(v)) for k, v in rates.items()},
        simulated=has_truth,
    )


def format_chatlog_table(result: ChatLogBenchmarkResult) -> str:
    """A Markdown table of ``mean ± std`` over seeds, one row per variant."""
    checked = any(
        np.isfinite(metrics.get("warned", {}).get("mean", float("nan")))
        for metrics in result.summary.values()
    )
    check = ("warned", "context_information") if checked else ()

    def check_cells(metrics):
        if not check:
            return ()
        warned = metrics.get("warned", {}).get("mean", float("nan"))
        shown = "n/a" if not np.isfinite(warned) else f"{warned:.0%} of seeds"
        return (shown, mean_std(metrics["context_information"], digits=4))

    rows = (
        (variant, *(mean_std(metrics[m]) for m in CHATLOG_METRICS), f"{metrics['seconds']['mean']:.0f}",
         *check_cells(metrics))
        for variant, metrics in result.summary.items()
    )  # fmt: skip
    headers = ("warned", "context nats/row") if check else ()
    table = markdown_table(("variant", *CHATLOG_METRICS, "seconds", *headers), rows)
    rates = ", ".join(f"{name} {rate:.1%}" for name, rate in result.rates.items())
    logs = "the simulated logs" if result.simulated else "the log"
    return table + f"\nMean action rates of {logs}: {rates}.\n"
