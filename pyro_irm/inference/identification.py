"""After a fit: does the data pin down the split between preference and engagement?

With one action channel, ImplicitRM separates the reward f from the engagement network g only
through what g sees and f does not: the context columns. A context column the embedding also
encodes (response length, a code block) gives no such separation: its effect on acting can sit in
g, through the column, or in f, through the embedding, and the likelihood cannot tell which. The
check measures that on held-out rows, in two figures per context column:

* ``context_r2``: how well the column is predicted from the embedding (ridge regression fit on the
  training rows, scored on the held-out rows: cross-fitted R^2). Near 1, the column is written in
  the embedding and gives g nothing f could not also read.
* ``context_information``: the held-out log-likelihood per row the fit loses when that column is
  replaced by its prediction from the embedding (nats per row). It is what the fit draws from the
  column's own variation, the part the reward cannot see; near 0, the split rests on the networks'
  inductive bias, not on the data.

Where nothing else identifies the split (a second channel, users, labels, a logged o), a column the
embedding encodes (R^2 at least ``MIN_ENCODED_R2``) and an information figure below
``MIN_CONTEXT_INFORMATION`` for every column is a warning, with the remedies that apply. (A column
the embedding does not encode cannot carry its effect into the reward, however little it informs.)
Cost: one ridge fit on at most ``max_rows`` training rows and two passes over at most
``max_rows`` held-out rows per column, whatever the log's size.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from pyro_irm.data.feedback import FeedbackData
from pyro_irm.inference.objectives import heldout_elbo
from pyro_irm.models.base import FeedbackModel, Rows, gather_rows
from pyro_irm.models.identifiability import IdentifiabilityWarning, engagement_reads, read_context_columns

logger = logging.getLogger(__name__)

# Below this many nats per held-out row drawn from the context beyond the embedding, the data do
# not decide the split (calibrated in BENCHMARKS.md, "One channel and a context column").
MIN_CONTEXT_INFORMATION = 0.05
# A column predicted from the embedding with at least this R^2 is written in it enough for its
# effect to sit in the reward (a column the embedding does not encode cannot: the reward cannot read it).
MIN_ENCODED_R2 = 0.3
# Rows the check reads from each side of the split, at most.
CHECK_ROWS = 20_000

# The remedies the warning names, each with its measured effect: AUC and the reward's length bias
# (its rank correlation with log length minus the truth's), UltraFeedback sample / AlpacaEval, 5 seeds
# (BENCHMARKS.md, "One channel and a context column"; the chat-log benchmark for a second channel).
# Measured and not named, since they did not help on either: erasing the context's linear directions
# from the reward's input (AUC 0.657 / 0.633) and decorrelating the reward from the context
# (--reward-context-penalty 1: AUC 0.468 / 0.532).
MEASURED_AGAINST = (
    "measured on a simulated log of one copy channel whose engagement follows length and code blocks "
    "(BENCHMARKS.md, 'One channel and a context column': AUC, then the reward's length bias, on the "
    "UltraFeedback sample / AlpacaEval; the default fit 0.656 / 0.640 and +0.36 / -0.21)"
)
REMEDIES = {
    "channel": "a second action channel, such as a negative one (--negative-action-col regenerated): "
    "in the chat-log benchmark AUC 0.678 / 0.730 against 0.607 / 0.683 with the copy channel alone, "
    "length bias +0.33 / -0.04 against +0.36 / -0.22",
    "context_prior": "engagement on the context alone with an engagement prior (--propensity-features "
    "context --engagement-prior-weight 1): AUC 0.678 / 0.730, length bias +0.46 / -0.16",
    "prior": "an engagement prior from the context (--engagement-prior-weight 1): AUC 0.662 / 0.730, "
    "length bias +0.41 / -0.16",
    "context_only": "engagement on the context alone (--propensity-features context): AUC 0.680 / "
    "0.707, length bias +0.44 / -0.24",
    "labels": "explicit labels on a few rows (--label-col with --fit-labels): with 2% labelled, AUC "
    "0.649 / 0.699, length bias +0.33 / -0.18",
}
# None of them moves the reward's length bias toward the truth on both data sets; said in the warning.


@dataclass(frozen=True)
class IdentificationCheck:
    """How well a fit's data pin down the preference/engagement split (see the module docstring).

    Attributes:
        context_r2: per context column, the cross-fitted R^2 of its prediction from the embedding.
        context_information: per context column, held-out nats per row lost when it is replaced by
            its prediction from the embedding.
        other_evidence: what else separates the split here (channels, users, labels).
        assumed: the remedies in force, which decide the split by assumption (no warning then).
        identified: whether the data (or the evidence above) decide the split.
        rows: held-out rows the figures are computed on.
    """

    context_r2: dict[str, float]
    context_information: dict[str, float]
    other_evidence: tuple[str, ...]
    identified: bool
    rows: int
    remedies: tuple[str, ...] = field(default=())
    assumed: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        """The warning's text: the figures, what they mean, and the remedies."""
        figures = ", ".join(
            f"{name} (R^2 {r2:.2f} from the embedding, {self.context_information[name]:.4f} nats per "
            "row of its own)"
            for name, r2 in self.context_r2.items()
        )
        listed = "; ".join(REMEDIES[key] for key in self.remedies)
        return (
            f"the data do not decide how much of acting is preference and how much engagement: the "
            f"context column(s) {figures or 'none'} carry less than {MIN_CONTEXT_INFORMATION} nats per "
            f"held-out row ({self.rows:,} rows) beyond what the embedding says, which encodes them, so "
            f"their effect can sit in the reward as well as in engagement, and the fit chose a side by "
            f"accident. Any of these pins it down, {MEASURED_AGAINST}: {listed}. The engagement prior, "
            "with or without the context alone, raised AUC on both; none moved the length bias toward "
            "the truth on both, so read your own figures with explicit labels where you have some"
        )


def check_identification(
    model: FeedbackModel,
    guide,
    data: FeedbackData,
    rows: Rows,
    train_index: torch.Tensor,
    validation_index: torch.Tensor,
    other_evidence: tuple[str, ...] = (),
    max_rows: int = CHECK_ROWS,
    seed: int = 0,
    assumed: tuple[str, ...] = (),
) -> IdentificationCheck | None:
    """The check of a latent-group fit on ``data`` (``rows``: what the model was fit on), or None
    where it does not apply (no context, no held-out rows, or g does not read the context)."""
    if data.context is None or not len(validation_index):
        return None
    all_names = data.context_columns
    names = _read_columns(model, all_names)
    if not names:  # g reads no context: nothing of it can pin the split
        return None
    read = [all_names.index(name) for name in names]
    generator = torch.Generator().manual_seed(seed)
    fit_rows = _at_most(train_index, max_rows, generator)
    held = _at_most(validation_index, max_rows, generator)
    embeddings = gather_rows(data.embeddings, fit_rows, torch.device("cpu")).double().numpy()
    context = data.context[fit_rows.to(data.context.device)][:, read].double().cpu().numpy()
    held_embeddings = gather_rows(data.embeddings, held, torch.device("cpu")).double().numpy()
    held_context = data.context[held.to(data.context.device)][:, read].double().cpu().numpy()
    predicted = _ridge_predictions(embeddings, context, held_embeddings)
    r2 = {name: _r2(held_context[:, k], predicted[:, k]) for k, name in enumerate(names)}
    held_rows = rows.take(held, model.device)
    with torch.no_grad():
        base = heldout_elbo(model, guide, held_rows, torch.arange(len(held)))
        information = {}
        for k, (name, column) in enumerate(zip(names, read, strict=True)):
            swapped = held_rows.context.clone()
            swapped[:, column] = torch.as_tensor(predicted[:, k], dtype=swapped.dtype, device=swapped.device)
            swapped_rows = replace(held_rows, context=swapped)
            information[name] = base - heldout_elbo(model, guide, swapped_rows, torch.arange(len(held)))
    encoded = any(value >= MIN_ENCODED_R2 for value in r2.values())
    decided = bool(other_evidence) or not encoded or max(information.values()) >= MIN_CONTEXT_INFORMATION
    remedies = () if decided else tuple(REMEDIES)
    return IdentificationCheck(
        r2, information, tuple(other_evidence), decided, len(held), remedies, tuple(assumed)
    )


def warn_if_not_decided(check: IdentificationCheck | None) -> None:
    """Warn where the data do not decide the split and no remedy decides it by assumption."""
    if check is not None and not check.identified and not check.assumed:
        warnings.warn(check.message(), IdentifiabilityWarning, stacklevel=3)


def _read_columns(model: FeedbackModel, names: tuple[str, ...]) -> tuple[str, ...]:
    """The context columns among ``names`` that the model's engagement network reads."""
    config = getattr(model, "config", None)
    if config is None or model.context_dim == 0:
        return ()
    return read_context_columns(engagement_reads(config, getattr(model, "propensity", None)), names)


def _at_most(index: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    if len(index) <= count:
        return index
    return index[torch.randperm(len(index), generator=generator)[:count]].sort().values


def _ridge_predictions(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Ridge regression of ``y`` ``(N, C)`` on ``x`` ``(N, D)``, its penalty chosen by
    leave-one-out error (scikit-learn's RidgeCV), predicted at ``x_new`` ``(M, D)``: ``(M, C)``."""
    from sklearn.linear_model import RidgeCV

    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x, y)
    return np.asarray(ridge.predict(x_new)).reshape(len(x_new), -1)


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    spread = float(np.var(truth))
    return float(1.0 - np.mean((truth - predicted) ** 2) / spread) if spread > 0 else float("nan")
