"""The implicit-feedback data set: embeddings, actions, optional context and, when simulated, the truth.

Tensors are validated once, when the container is built, and are never copied: a float32 NumPy array
or memory map is wrapped as a tensor sharing its memory, so a million rows cost their own size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from pyro_irm.channels import DEFAULT_CHANNELS, ChannelSpec, check_channels
from pyro_irm.data.paging import mapped_pages, register_row_file
from pyro_irm.groups import group_index

# Rows scanned at a time when checking large tensors, so validation needs no full-size temporaries.
_VALIDATION_CHUNK_ROWS = 65_536

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class GroundTruth:
    """What a simulator knows and a real log does not. Every field is a ``(N,)`` tensor.

    Attributes:
        preference: latent true preference r in {0, 1}, float32.
        engagement: latent engagement o in {0, 1}, float32 (would this user act at all).
        group: group index in ``GROUP_NAMES`` order, int64.
        preference_probability: P(r = 1 | row) used to draw r, float32.
        propensity_probability: P(o = 1 | row, r) used to draw o, float32.
        score: the graded quality score r was derived from (semi-synthetic) or the true reward logit.
    """

    preference: torch.Tensor
    engagement: torch.Tensor
    group: torch.Tensor
    preference_probability: torch.Tensor
    propensity_probability: torch.Tensor
    score: torch.Tensor

    def subset(self, index: torch.Tensor) -> GroundTruth:
        return GroundTruth(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def as_float_tensor(name: str, value: ArrayLike) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number) and value.dtype != np.bool_:
            raise ValueError(f"{name}: expected numbers, got an array of dtype {value.dtype}")
        value = torch.from_numpy(np.asarray(value))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor or numpy array, got {type(value).__name__}")
    if value.dtype != torch.float32:
        value = value.to(torch.float32)
    return value


def first_non_finite(name: str, values: torch.Tensor, after_chunk=None) -> None:
    """Raise naming the first row (and column) of ``values`` holding NaN or inf; scans in chunks
    (calling ``after_chunk()`` after each, where given)."""
    for start in range(0, values.shape[0], _VALIDATION_CHUNK_ROWS):
        chunk = values[start : start + _VALIDATION_CHUNK_ROWS]
        finite = torch.isfinite(chunk)
        if after_chunk is not None:
            after_chunk()
        if finite.all():
            continue
        bad = (~finite).nonzero()[0].tolist()
        row = start + bad[0]
        where = f"row {row}" + (f", column {bad[1]}" if values.dim() == 2 else "")
        raise ValueError(f"{name}: {where} is {chunk[tuple(bad)].item()}; every value must be finite")


@dataclass(frozen=True)
class FeedbackData:
    """One row per shown response.

    Attributes:
        embeddings: ``(N, D)`` float32 text embeddings of prompt and response.
        actions: ``(N,)`` float32 observed implicit action y in {0, 1} (clicked, copied, ...), or
            ``(N, K)``, one column per declared channel (binary 0/1, or continuous such as seconds).
        channels: the K channels' declarations (name, polarity, kind); default one positive binary
            channel named ``action``.
        context: optional ``(N, C)`` float32 propensity features (position, length, format, ...).
        truth: optional :class:`GroundTruth` of simulated rows.
        labels: optional ``(N,)`` float32 explicit preference labels in {0, 1}, NaN where a row has
            none (annotations of a few rows); used to evaluate and by the oracle, never by fitting.
        observed: optional ``(N,)`` float32 observation indicator o in {0, 1}: whether the log says
            feedback was given (CausalRM's observational setting). Then ``actions`` is the feedback
            value, possibly noisy, and must be 0 where ``observed`` is 0. Without it the log is
            implicit: o is latent and an action is the only trace of it.
        propensity: optional ``(N,)`` float32 known ``P(o = 1 | row)`` in (0, 1] (for example from a
            randomized display policy); estimators use it when told ``propensity_source='given'``.
        prompt_ids: optional ``(N,)`` int64 prompt index; rows of one prompt share it (pairwise
            metrics and pairwise estimators).
        users: optional ``(N,)`` int64 user index in ``[0, U)``, -1 for an unknown user: the user
            random effect on engagement (the reward never sees it).
        context_names: optional names of the ``C`` context columns, in order (a log's
            ``--context-col`` names, ``("position",)`` for a simulated log), so a component can
            find a column by name (:meth:`context_index`).

    Raises:
        ValueError: naming the field and first bad row, for non-finite values, actions outside
            {0, 1}, mismatched lengths, wrong ranks or empty data.
    """

    embeddings: torch.Tensor
    actions: torch.Tensor
    context: torch.Tensor | None = None
    truth: GroundTruth | None = None
    labels: torch.Tensor | None = None
    observed: torch.Tensor | None = None
    propensity: torch.Tensor | None = None
    prompt_ids: torch.Tensor | None = None
    channels: tuple[ChannelSpec, ...] | None = None
    users: torch.Tensor | None = None
    context_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Validate and convert every field, in named steps (each refuses naming the field, row
        and value)."""
        num_rows = self._check_rows()
        self._check_context(num_rows)
        self._check_labels(num_rows)
        self._check_observation(num_rows)
        self._check_indices(num_rows)
        self._check_truth(num_rows)

    def _check_rows(self) -> int:
        """Embeddings ``(N, D)``, actions ``(N,)`` or ``(N, K)`` in their channels' domains; N."""
        pages = mapped_pages(self.embeddings)
        embeddings = as_float_tensor("embeddings", self.embeddings)
        actions = as_float_tensor("actions", self.actions)
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings: expected shape (rows, dim), got {tuple(embeddings.shape)}")
        if embeddings.shape[0] == 0:
            raise ValueError("embeddings: the data set is empty (0 rows); give at least one row")
        if embeddings.shape[1] == 0:
            raise ValueError("embeddings: each row has 0 dimensions")
        num_rows = embeddings.shape[0]
        if actions.dim() == 2 and actions.shape[1] == 1:
            actions = actions[:, 0]
        if actions.dim() not in (1, 2):
            raise ValueError(
                f"actions: expected shape (rows,) or (rows, channels), got {tuple(actions.shape)}"
            )
        if actions.shape[0] != num_rows:
            raise ValueError(
                f"actions: {actions.shape[0]} rows but embeddings has {num_rows}; "
                "every row needs one embedding and one action"
            )
        num_channels = 1 if actions.dim() == 1 else actions.shape[1]
        channels = check_channels(self.channels or DEFAULT_CHANNELS)
        if len(channels) != num_channels:
            raise ValueError(
                f"actions: {num_channels} column(s) but {len(channels)} channel(s) declared "
                f"({', '.join(c.name for c in channels)}); declare one channel per column"
            )
        object.__setattr__(self, "_pages", pages)
        if pages is not None:  # minibatches read its rows from the file, not through the mapping
            register_row_file(embeddings, self.embeddings)
        first_non_finite("embeddings", embeddings, after_chunk=self.release_pages)
        # NaN is a missing cell (that channel is left out of the row's likelihood); infinity is wrong.
        first_non_finite("actions", torch.where(torch.isnan(actions), 0.0, actions))
        columns = actions[:, None] if actions.dim() == 1 else actions
        for k, channel in enumerate(channels):
            bad_action = _outside_domain(columns[:, k], channel).nonzero()
            if bad_action.numel():
                row = bad_action[0, 0].item()
                value = columns[row, k].item()
                raise ValueError(
                    f"actions: row {row}, channel {channel.name!r} is {value:g}; "
                    f"{channel.domain.problem(value, channel)}"
                )
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "embeddings", embeddings)
        object.__setattr__(self, "actions", actions)
        return num_rows

    def _check_context(self, num_rows: int) -> None:
        if self.context is not None:
            context = as_float_tensor("context", self.context)
            if context.dim() == 1:
                context = context[:, None]
            if context.dim() != 2 or context.shape[0] != num_rows:
                raise ValueError(f"context: expected shape ({num_rows}, columns), got {tuple(context.shape)}")
            first_non_finite("context", context)
            object.__setattr__(self, "context", context)
        if self.context_names is not None:
            names = tuple(str(name) for name in self.context_names)
            if len(names) != self.context_dim or len(set(names)) != len(names):
                raise ValueError(
                    f"context_names: {list(names)} must name each of the {self.context_dim} context "
                    "column(s) once, in order"
                )
            object.__setattr__(self, "context_names", names)

    def _check_labels(self, num_rows: int) -> None:
        if self.labels is not None:
            labels = as_float_tensor("labels", self.labels).reshape(-1)
            if labels.shape[0] != num_rows:
                raise ValueError(f"labels: {labels.shape[0]} rows but embeddings has {num_rows}")
            bad = (~torch.isnan(labels) & (labels != 0) & (labels != 1)).nonzero()
            if bad.numel():
                row = bad[0, 0].item()
                raise ValueError(f"labels: row {row} is {labels[row].item()}; labels must be 0, 1 or NaN")
            object.__setattr__(self, "labels", labels)

    def _check_observation(self, num_rows: int) -> None:
        """The logged o and the known propensity of an observational log."""
        if self.observed is not None:
            observed = _row_vector("observed", self.observed, num_rows)
            bad = ((observed != 0) & (observed != 1)).nonzero()
            if bad.numel():
                row = bad[0, 0].item()
                raise ValueError(f"observed: row {row} is {observed[row].item()}; it must be 0 or 1")
            bad = ((observed == 0) & (self.action != 0)).nonzero()
            if bad.numel():
                row = bad[0, 0].item()
                raise ValueError(
                    f"actions: row {row} is 1 but observed is 0 there; a row without feedback "
                    "has no feedback value (give 0)"
                )
            object.__setattr__(self, "observed", observed)
        if self.propensity is not None:
            propensity = _row_vector("propensity", self.propensity, num_rows)
            bad = (~((propensity > 0) & (propensity <= 1))).nonzero()
            if bad.numel():
                row = bad[0, 0].item()
                raise ValueError(f"propensity: row {row} is {propensity[row].item()}; it must lie in (0, 1]")
            object.__setattr__(self, "propensity", propensity)

    def _check_indices(self, num_rows: int) -> None:
        """Prompt and user indices (integers; -1 an unknown user)."""
        if self.prompt_ids is not None:
            prompt_ids = torch.as_tensor(np.asarray(self.prompt_ids)).reshape(-1)
            if prompt_ids.dtype.is_floating_point or prompt_ids.dtype == torch.bool:
                raise ValueError(f"prompt_ids: expected integers, got {prompt_ids.dtype}")
            if prompt_ids.shape[0] != num_rows:
                raise ValueError(f"prompt_ids: {prompt_ids.shape[0]} rows but embeddings has {num_rows}")
            object.__setattr__(self, "prompt_ids", prompt_ids.long())
        if self.users is not None:
            users = torch.as_tensor(np.asarray(self.users)).reshape(-1)
            if users.dtype.is_floating_point or users.dtype == torch.bool:
                raise ValueError(f"users: expected integer user indices, got {users.dtype}")
            if users.shape[0] != num_rows:
                raise ValueError(f"users: {users.shape[0]} rows but embeddings has {num_rows}")
            if users.numel() and int(users.min()) < -1:
                raise ValueError(
                    f"users: row {int(users.argmin())} is {int(users.min())}; use -1 for unknown"
                )
            object.__setattr__(self, "users", users.long())

    def _check_truth(self, num_rows: int) -> None:
        if self.truth is not None:
            for field in fields(self.truth):
                value = getattr(self.truth, field.name)
                if value.shape[0] != num_rows:
                    raise ValueError(
                        f"truth.{field.name}: {value.shape[0]} rows but embeddings has {num_rows}"
                    )

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def context_index(self, name: str) -> int:
        """The position of the context column ``name`` among the ``C`` columns."""
        names = self.context_names or ()
        if name not in names:
            known = f"its columns are {list(names)}" if names else "its context columns have no names"
            raise ValueError(f"context: no column named {name!r}; {known} (FeedbackData.context_names)")
        return names.index(name)

    @property
    def context_columns(self) -> tuple[str, ...]:
        """The ``C`` context columns' names: ``context_names``, or ``context_0``, ... where unnamed."""
        return self.context_names or tuple(f"context_{k}" for k in range(self.context_dim))

    @property
    def embedding_dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def context_dim(self) -> int:
        return 0 if self.context is None else self.context.shape[1]

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def action_matrix(self) -> torch.Tensor:
        """``(N, K)``: every channel's column."""
        return self.actions if self.actions.dim() == 2 else self.actions[:, None]

    def channel_columns(self, polarity: str, kind: str = "binary") -> list[int]:
        """Indices of the channels of this polarity and kind, in column order."""
        return [k for k, c in enumerate(self.channels) if c.kind == kind and c.polarity == polarity]

    def acted_columns(self, polarity: str) -> list[int]:
        """Indices of the channels of this polarity that say "acted" when above 0: binary
        channels and counts (a reaction count, say)."""
        return self.channel_columns(polarity) + self.channel_columns(polarity, "count")

    @property
    def action(self) -> torch.Tensor:
        """``(N,)`` in {0, 1}: 1 where any positive binary channel fired or positive count is above
        0 (what single-action estimators such as naive see; with one channel it is that channel)."""
        if self.actions.dim() == 1:
            return torch.nan_to_num(self.actions, nan=0.0)
        positive = self.acted_columns("positive")
        if not positive:
            raise ValueError(
                "this log has no positive binary or count channel, so it has no single 'acted' column "
                "for single-action methods; declare a positive action (--action-col)"
            )
        # A missing cell is not an action, for the estimators that see one combined action.
        return (torch.nan_to_num(self.actions[:, positive], nan=0.0) > 0).float().amax(dim=1)

    def action_without_negative(self) -> torch.Tensor:
        """``(N,)``: a positive action and no negative one (the heuristic label of a real log)."""
        negative = self.acted_columns("negative")
        if not negative:
            return self.action
        acted_negative = (torch.nan_to_num(self.actions[:, negative], nan=0.0) > 0).float().amax(dim=1)
        return self.action * (1 - acted_negative)

    @property
    def num_users(self) -> int:
        """U: one more than the largest user index (0 without users)."""
        if self.users is None or self.users.numel() == 0:
            return 0
        return int(self.users.max()) + 1

    @property
    def setting(self) -> str:
        """'observational' when the log records whether feedback was given, else 'implicit'."""
        return "implicit" if self.observed is None else "observational"

    def to(self, device: str | torch.device) -> FeedbackData:
        """These rows with every tensor on ``device`` (a fit on a GPU moves its data there once,
        so that no step copies from the host); memory-mapped embeddings stay on their file."""
        device = torch.device(device)
        if self._pages is not None or self.embeddings.device == device:
            return self

        def moved(values):
            return None if values is None else values.to(device)

        truth = None
        if self.truth is not None:
            truth = GroundTruth(**{f.name: moved(getattr(self.truth, f.name)) for f in fields(self.truth)})
        names = (
            "embeddings",
            "actions",
            "context",
            "labels",
            "observed",
            "propensity",
            "prompt_ids",
            "users",
        )
        return replace(self, truth=truth, **{name: moved(getattr(self, name)) for name in names})

    def release_pages(self) -> None:
        """Give back the resident pages of memory-mapped embeddings (see :mod:`pyro_irm.data.paging`);
        a fit calls it between minibatches so that its memory stays bounded. Otherwise a no-op."""
        if self._pages is not None:
            self._pages.release()

    def fingerprint(self) -> str:
        """A digest of what a fit reads: embeddings, actions, context, users, observation indicators,
        given propensities and explicit labels (hashed in chunks, never copied whole)."""
        digest = hashlib.blake2b(digest_size=16)
        for name in ("embeddings", "actions", "context", "users", "observed", "propensity", "labels"):
            values = getattr(self, name)
            digest.update(name.encode())
            if values is None:
                continue
            digest.update(repr(tuple(values.shape)).encode())
            for chunk in self.chunks(values):
                digest.update(chunk.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def chunks(self, values: torch.Tensor):
        """``values`` (one of this data's ``(N, ...)`` fields) in chunks of rows, giving back the
        pages of memory-mapped embeddings after each, so a scan over the rows stays small."""
        for start in range(0, values.shape[0], _VALIDATION_CHUNK_ROWS):
            yield values[start : start + _VALIDATION_CHUNK_ROWS]
            self.release_pages()

    def subset(self, index: torch.Tensor) -> FeedbackData:
        """The rows at ``index`` (a copy of just those rows)."""
        return replace(
            self,
            embeddings=self.embeddings[index],
            actions=self.actions[index],
            context=None if self.context is None else self.context[index],
            truth=None if self.truth is None else self.truth.subset(index),
            labels=None if self.labels is None else self.labels[index],
            observed=None if self.observed is None else self.observed[index],
            propensity=None if self.propensity is None else self.propensity[index],
            prompt_ids=None if self.prompt_ids is None else self.prompt_ids[index],
            users=None if self.users is None else self.users[index],
        )

    def split(self, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Random disjoint ``(first, second)`` row indices, ``second`` holding ``fraction`` of rows."""
        return split_indices(len(self), fraction, seed)


def _row_vector(name: str, value: ArrayLike, num_rows: int) -> torch.Tensor:
    vector = as_float_tensor(name, value).reshape(-1)
    if vector.shape[0] != num_rows:
        raise ValueError(f"{name}: {vector.shape[0]} rows but embeddings has {num_rows}")
    first_non_finite(name, vector)
    return vector


def split_indices(num_rows: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle ``range(num_rows)`` with ``seed`` and cut off ``fraction`` (at least one row each)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if num_rows < 2:
        raise ValueError(f"cannot split {num_rows} row(s) in two; give at least 2 rows")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_rows, generator=generator)
    held_out = min(max(1, round(num_rows * fraction)), num_rows - 1)
    return order[held_out:].sort().values, order[:held_out].sort().values


def make_truth(
    preference: torch.Tensor,
    engagement: torch.Tensor,
    preference_probability: torch.Tensor,
    propensity_probability: torch.Tensor,
    score: torch.Tensor,
) -> GroundTruth:
    """Build :class:`GroundTruth`, deriving the group index from ``r`` and ``o``."""
    return GroundTruth(
        preference=preference.float(),
        engagement=engagement.float(),
        group=group_index(preference, engagement),
        preference_probability=preference_probability.float(),
        propensity_probability=propensity_probability.float(),
        score=score.float(),
    )


def _outside_domain(values: torch.Tensor, channel: ChannelSpec) -> torch.Tensor:
    """``(N,)`` True where a logged value lies outside its channel's domain (NaN is missing, allowed)."""
    kind = channel.domain
    present = torch.isfinite(values)
    if channel.kind == "binary":
        return present & (values != 0) & (values != 1)
    bad = torch.zeros_like(present)
    if kind.integer:
        bad |= present & (values != values.round())
    if kind.low is not None:
        bad |= present & (values < kind.low)
    if channel.levels is not None:
        bad |= present & (values > channel.levels)
    return bad
