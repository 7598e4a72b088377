"""A run's report: one Markdown file with its tables and the plots beside it.

What a person checks after a fit: how it converged, how it scores against explicit labels, how its
rewards split by action, and, on a simulated log, whether the posterior groups are right (accuracy,
confusion, calibration).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pyro_irm.analysis.convert import to_inference_data
from pyro_irm.analysis.group_diagnostics import diagnose_inference_data
from pyro_irm.analysis.metrics import label_metrics
from pyro_irm.analysis.plots import new_figure, plot_group_confusion, plot_group_reliability
from pyro_irm.atomic import save_figure, write_text_atomic
from pyro_irm.data.logs import FeedbackLog
from pyro_irm.tables import markdown_table


def plot_reward_by_action(rewards: np.ndarray, actions: np.ndarray, path: str | Path) -> Path:
    """Histograms of P(preferred) for rows with and without an action."""
    path = Path(path)
    figure, axis = new_figure(figsize=(6, 3.4), dpi=120)
    bins = np.linspace(0, 1, 31)
    for value, label in ((1, "acted (y = 1)"), (0, "no action (y = 0)")):
        chosen = rewards[actions == value]
        if len(chosen):
            axis.hist(chosen, bins=bins, alpha=0.6, density=True, label=f"{label}, {len(chosen):,} rows")
    axis.set_xlabel("P(preferred)")
    axis.set_ylabel("density")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)
    return path


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


# Below these counts a metric is shown with a warning: its sampling error is large.
_FEW_ROWS, _FEW_PAIRS = 100, 30


def _labelled_table(metrics: dict[str, float]) -> str:
    """The label metrics, each beside the count it is computed from, flagged where that is few."""
    rows, pairs = int(metrics["rows"]), int(metrics.get("pairs", 0))
    shown: dict[str, object] = {}
    for name, value in metrics.items():
        if name in ("rows", "pairs", "prompts_with_pairs"):
            continue
        if name == "pairwise_accuracy":
            prompts = int(metrics["prompts_with_pairs"])
            basis = f"{pairs:,} pairs in {prompts:,} prompts"
            few = pairs < _FEW_PAIRS
            if not pairs:
                shown[name] = "n/a (no prompt has two labelled responses that differ)"
                continue
        else:
            basis, few = f"{rows:,} labelled rows", rows < _FEW_ROWS
        text = "n/a" if value != value else f"{value:.4f}"
        shown[name] = f"{text} ({basis}{'; few, so read it loosely' if few else ''})"
    return markdown_table(("metric", "value"), shown.items())


def _identification(check: dict) -> str:
    """The identification check's figures (pyro_irm.inference.identification) and its verdict."""
    rows = [
        (name, check["context_r2"][name], check["context_information"][name]) for name in check["context_r2"]
    ]
    table = markdown_table(
        ("context column", "R^2 from the embedding", "nats per row of its own"), rows, digits=4
    )
    if check["other_evidence"]:
        verdict = "Besides the context: " + ", ".join(check["other_evidence"]) + "."
    elif check.get("assumed"):
        verdict = "Decided by assumption: " + ", ".join(check["assumed"]) + "."
    elif check["identified"]:
        verdict = "The context carries enough of its own variation to decide the split."
    else:
        verdict = (
            "**Not decided:** the fit chose a side by accident; see the warning's remedies and their "
            "measured effects (a second channel; --propensity-features context with "
            "--engagement-prior-weight 1; a few labels)."
        )
    return f"On {check['rows']:,} held-out rows.\n\n{table}\n{verdict}\n"


def _table(rows: dict[str, object]) -> str:
    return markdown_table(("", ""), rows.items(), digits=4)


def write_report(run, log: FeedbackLog, embeddings: np.ndarray, out: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNGs into ``out`` (default ``RUN_DIR/report``); returns the file.

    Args:
        run: a :class:`pyro_irm.runs.Run`.
        log: the log to report on (usually the training log), read with the run's schema.
        embeddings: ``(N, D)`` embeddings of the log's rows.
    """
    out = Path(out) if out is not None else run.directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    data = run.feedback(log, embeddings)  # the rows as the run's model sees them
    metrics_path = run.directory / "metrics.json"
    stored = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    probability = run.reward_model.preference_probability(data.embeddings, data.context).numpy()
    actions = data.action.numpy()  # any positive channel
    sections = [*_overview(run, log, data, actions), *_fit_sections(run, stored, out)]
    sections += _reward_sections(run.reward_model, data, probability, actions, out)
    if log.has_labels:
        sections += _label_sections(run, log, probability)
    if data.truth is not None:
        sections += _truth_sections(run.reward_model, data, out)
    path = out / "report.md"
    write_text_atomic(path, "\n".join(sections))
    return path


def _overview(run, log: FeedbackLog, data, actions: np.ndarray) -> list[str]:
    channels = ""
    if data.num_channels > 1:
        channels = " Channels: " + ", ".join(
            f"{c.name} ({c.polarity}) {values.mean():.1%}"
            if c.kind == "binary"
            else f"{c.name} ({c.polarity}, {c.kind}) mean {np.nanmean(values):.3g}"
            for c, values in zip(data.channels, data.action_matrix.T.numpy(), strict=True)
        )
        channels += "; 'an action' below is any positive one."
    return [
        f"# Report: {run.name}\n",
        f"Method **{run.method}**, fit on `{run.info.get('log')}` ({run.info.get('rows', '?'):,} rows). "
        f"This report covers `{log.report.source}`: {len(log):,} rows, {actions.mean():.1%} with an action"
        + (", an observational log." if data.observed is not None else ".")
        + channels,
    ]


def _fit_sections(run, stored: dict, out: Path) -> list[str]:
    fit_metrics = stored.get("fit", {})
    sections = [
        "\n## Fit\n",
        _table(fit_metrics) if fit_metrics else "No metrics.json in the run directory.\n",
    ]
    if stored.get("identification"):
        sections += [
            "\n## Does the data decide the preference/engagement split?\n",
            _identification(stored["identification"]),
        ]
    if run.info.get("nuisance"):
        sections.append(
            "Nuisance estimates: " + ", ".join(f"{k}: {v}" for k, v in run.info["nuisance"].items()) + ".\n"
        )
    curve = run.directory / "elbo.png"
    if curve.exists():
        sections.append(f"![training curve]({os.path.relpath(curve, out)})\n")
    return sections


def _reward_sections(model, data, probability: np.ndarray, actions: np.ndarray, out: Path) -> list[str]:
    plot_reward_by_action(probability, actions, out / "reward_by_action.png")
    sections = [
        "\n## Rewards\n",
        f"Mean P(preferred): {_mean(probability[actions == 1]):.3f} on rows with an action, "
        f"{_mean(probability[actions == 0]):.3f} on rows without one.\n",
        "![rewards by action](reward_by_action.png)\n",
    ]
    if model.head_posterior is not None:
        _, low, high = model.reward_interval(data.embeddings)
        width = (high - low).numpy()
        sections += [
            "\n## Reward uncertainty\n",
            f"Posterior by {model.head_posterior.method}: the 90% interval of the reward logit is "
            f"{np.median(width):.3f} wide on the median row (10th to 90th percentile of rows: "
            f"{np.quantile(width, 0.1):.3f} to {np.quantile(width, 0.9):.3f}).\n",
        ]
    return sections


def _label_sections(run, log: FeedbackLog, probability: np.ndarray) -> list[str]:
    truth_scores = None if log.truth is None else log.truth["score"]
    metrics = label_metrics(log.labels, probability, log.prompt_ids, truth_scores)
    fitted = run.info.get("train_config", {}).get("fit_labels", False)
    caveat = (
        "These labels were used in the fit (--fit-labels): this is agreement, not an evaluation.\n"
        if fitted
        else ""
    )
    return ["\n## Against the explicit labels\n", caveat, _labelled_table(metrics)]


def _truth_sections(model, data, out: Path) -> list[str]:
    idata = to_inference_data(model, data, max_draws=20)  # diagnostics average over draws
    diagnostics = diagnose_inference_data(idata)
    silent = diagnose_inference_data(idata, no_action_only=True)
    plot_group_confusion(diagnostics, out / "group_confusion.png")
    plot_group_reliability(diagnostics, out / "group_reliability.png")
    majority = np.bincount(data.truth.group.numpy(), minlength=4).max() / len(data)
    return [
        "\n## Posterior groups against the simulated truth\n",
        _table(
            {
                **diagnostics.as_dict(),
                "no-action rows: group accuracy": silent.accuracy,
                "most frequent group's share (a constant guess)": float(majority),
            }
        ),
        "Rows: true group; columns: the most probable group.\n",
        diagnostics.confusion_table(),
        "![confusion](group_confusion.png)\n",
        "![reliability](group_reliability.png)\n",
    ]
