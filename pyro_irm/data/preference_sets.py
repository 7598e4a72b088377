"""Real preference data sets as rows of (prompt, response, true score), for semi-synthetic logs:
loading them (formats in :mod:`pyro_irm.data.preference_formats`) and simulating a log on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_irm.data.logs import DroppedRow, LoadReport, LogFormatError, OnError, prompt_hash
from pyro_irm.data.preference_formats import PREFERENCE_SETS, BadField, Row
from pyro_irm.data.readers import ParseError, iter_records
from pyro_irm.data.simulation import SimulationConfig, simulate_actions
from pyro_irm.data.world import standardize


@dataclass(frozen=True)
class ScoredResponses:
    """Responses with true graded scores.

    Attributes:
        name: the data set's name in ``PREFERENCE_SETS``.
        prompts, responses: ``N`` texts each.
        scores: ``(N,)`` float64 true scores.
        prompt_ids: ``N`` prompt hashes (rows of one prompt share one).
        threshold: a row is preferred when its score is above it.
        score_range: the label scale ``(low, high)``.
        report: rows read and dropped.
    """

    name: str
    prompts: list[str]
    responses: list[str]
    scores: np.ndarray
    prompt_ids: list[str]
    threshold: float
    score_range: tuple[float, float]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def preference(self) -> np.ndarray:
        """``(N,)`` float32 true preference ``1{score > threshold}``."""
        return (self.scores > self.threshold).astype(np.float32)


def load_preference_set(
    name: str,
    data_file: str | Path | None = None,
    split: str | None = None,
    on_error: OnError = "raise",
    limit: int | None = None,
) -> ScoredResponses:
    """Load data set ``name`` from ``data_file`` (a file or saved directory in the published format)
    or, without one, from the hub; ``split`` defaults to the data set's train split; ``limit`` keeps
    the first rows of the source only."""
    if name not in PREFERENCE_SETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(PREFERENCE_SETS)}")
    spec = PREFERENCE_SETS[name]
    if data_file is None:
        if spec.hub_name is None:
            raise ValueError(f"{name} has no hub copy this toolkit knows; give its file with data_file=")
        source: str | Path = spec.hub_name
        split = split or spec.train_split
    else:
        source = data_file
    rows: list[Row] = []
    dropped: list[DroppedRow] = []
    read = 0
    for row, record in iter_records(source, split):
        if limit is not None and read >= limit:
            break
        read += 1
        try:
            if isinstance(record, ParseError):
                raise BadField(record.field, record.reason)
            rows.extend(spec.to_rows(record))
        except BadField as bad:
            if on_error == "raise":
                raise LogFormatError(
                    f"{source}, row {row}, field {bad.field!r}: {bad.reason} (reading it as {name})"
                ) from None
            dropped.append(DroppedRow(row, bad.field, bad.reason))
    report = LoadReport(str(source), read, tuple(dropped))
    if not rows:
        raise LogFormatError(f"{source}: no usable rows as {name} ({report.summary()})")
    prompts, responses, scores = zip(*rows, strict=True)
    return ScoredResponses(
        name=name,
        prompts=list(prompts),
        responses=list(responses),
        scores=np.asarray(scores, dtype=np.float64),
        prompt_ids=[prompt_hash(p) for p in prompts],
        threshold=spec.threshold,
        score_range=spec.score_range,
        report=report,
    )


def simulate_log(scored: ScoredResponses, config: SimulationConfig | None = None) -> list[dict[str, Any]]:
    """A semi-synthetic implicit-feedback log: one record per response, with simulated actions.

    The preference is ``r = 1{score > threshold}``. The propensity follows ``config``: the papers'
    ``alpha_power`` form on the graded score, or the ``logistic`` form, whose response feature is
    the standardized log length of the response (long answers draw more actions whatever their
    quality) and whose context is the display ``position`` (1 = top).

    Each record has ``prompt``, ``response``, ``prompt_id``, ``action``, ``label`` (the true
    preference, for evaluation), ``position`` (logistic form with context), ``observed`` (the
    observational setting: read it with ``LogSchema(observed="observed")``) and the truth columns
    (``true_preference``, ``true_engagement``, ``true_propensity_probability``, ``score``).
    """
    config = config or SimulationConfig(propensity_form="alpha_power")
    generator = torch.Generator().manual_seed(config.seed)
    scores = torch.as_tensor(scored.scores, dtype=torch.float32)
    preference = torch.from_numpy(scored.preference)
    lengths = torch.tensor([len(r) for r in scored.responses], dtype=torch.float32)
    feature = standardize(torch.log1p(lengths))
    drawn = simulate_actions(scores, preference, feature, config, generator, scored.score_range)
    records = []
    for i in range(len(scored)):
        record = {
            "prompt": scored.prompts[i],
            "response": scored.responses[i],
            "prompt_id": scored.prompt_ids[i],
            "action": int(drawn.actions[i]),
            "label": int(preference[i]),
        }
        if drawn.positions is not None:
            record["position"] = int(drawn.positions[i]) + 1
        if config.setting == "observational":
            record["observed"] = int(drawn.engagement[i])
        record.update(
            true_preference=int(preference[i]),
            true_engagement=int(drawn.engagement[i]),
            true_propensity_probability=round(float(drawn.propensity_probability[i]), 6),
            score=float(scored.scores[i]),
        )
        records.append(record)
    return records
