"""From a log with text to a saved run and back: embed, fit, save, load, score.

A run directory holds everything needed to use a fitted model on new text::

    run_dir/
      model/          the RewardModel (weights.safetensors + reward_model.json)
      encoder/        the trained encoder and its tokenizer, when the fit fine-tuned it
      run.json        method, training, model, encoder and column configuration, the source log
      metrics.json    how the fit went, and label metrics where the training log had labels
      elbo.png        training and held-out ELBO per epoch
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pyro_irm.analysis.plots import plot_fit_history
from pyro_irm.atomic import atomic_directory, strict_json
from pyro_irm.data.logs import FeedbackLog, LogSchema
from pyro_irm.encoders.cache import default_cache_root, rows_fingerprint
from pyro_irm.encoders.config import EncoderConfig
from pyro_irm.encoders.embed import embed_rows, load_embeddings, open_cache
from pyro_irm.encoders.encoder import TextEncoder
from pyro_irm.estimators import get_estimator
from pyro_irm.estimators.nuisance import EstimatorConfig
from pyro_irm.export.hf import reward_stats
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.result import FitResult
from pyro_irm.inference.svi import fit
from pyro_irm.models.config import ModelConfig
from pyro_irm.models.reward_model import RewardModel

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
ENCODER_DIR = "encoder"  # a fine-tuned encoder, saved with the run
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
ELBO_PLOT = "elbo.png"

# The encoder identity's keys that say how texts are read; a run compares them with the encoder it
# loads. Where it was loaded from (model, source) may change when a run directory moves.
_ENCODER_READING = ("architecture", "pooling", "layer", "text_mode", "chat_template", "chat_end",
                    "truncation_side", "max_length", "normalize", "precision")  # fmt: skip
# Before chat rows were read at the end-of-turn token, they were read at the template's last token.
_EARLIER_CHAT_END = "the template's last token"
_ENCODER_WEIGHTS = ("revision", "fingerprint")


# What each key of run.json holds where present (None: not recorded).
_INFO_TYPES = {
    "method": str, "schema": dict, "digests": dict, "read": (dict, type(None)), "encoder": (dict, type(None)),
    "encoder_identity": (dict, type(None)), "log": (str, type(None)), "log_sha256": (str, type(None)),
    "reward_stats": (dict, type(None)), "nuisance": (dict, type(None)), "train_config": dict,
}  # fmt: skip


class RunIntegrityError(ValueError):
    """A run directory's files are not those it was written with (weights replaced or changed)."""


def file_digests(directory: Path, folders: tuple[str, ...] = (MODEL_DIR, ENCODER_DIR)) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folders`` of a run directory."""
    digests = {}
    for folder in folders:
        for path in sorted((directory / folder).rglob("*")):
            if path.is_file():
                digests[path.relative_to(directory).as_posix()] = file_sha256(path)
    return digests


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def log_identity(source: str, read_sha256: str | None = None) -> dict:
    """Where a training log is and what it held: ``{"log": absolute path, "log_sha256": ...}`` for
    a local file (``read_sha256``, the digest of the bytes the fit read, where known: a file
    appended to since is then seen as changed), ``{"log": source}`` for anything else (a hub name,
    rows in memory)."""
    path = Path(source)
    if not path.is_file():
        return {"log": source, "log_sha256": None}
    return {"log": str(path.resolve()), "log_sha256": read_sha256 or file_sha256(path)}


def training_log(run: Run) -> str:
    """The log ``run`` was fit on, checked to be there and unchanged (a warning if it changed)."""
    source = run.info.get("log")
    if source is None:
        raise ValueError(f"{run.directory}/run.json names no log; give one with --log")
    path = Path(source)
    recorded = run.info.get("log_sha256")
    if recorded is None and not path.is_absolute() and not path.is_file():
        raise FileNotFoundError(
            f"{run.directory} was fit on {source}, a path relative to where `fit` ran (older runs "
            "store it so); run this from there or give the log with --log"
        )
    if recorded is not None:
        if not path.is_file():
            raise FileNotFoundError(
                f"{run.directory} was fit on {source}, which is no longer there; give the log with --log"
            )
        if file_sha256(path) != recorded:
            logger.warning(
                "%s has changed since %s was fit on it (its sha256 differs); it is read as it is now",
                source,
                run.name,
            )
    return source


def verify_digests(directory: Path, recorded: dict[str, str] | None, trust_unverified: bool = False) -> None:
    """Refuse a run whose weight files differ from those :func:`save_run` recorded in ``run.json``,
    and one that records none unless ``trust_unverified``.

    Raises:
        RunIntegrityError: naming every file that changed, appeared or went missing.
    """
    if recorded is None or not isinstance(recorded, dict):
        if not trust_unverified:
            raise RunIntegrityError(
                f"{directory}/{RUN_FILE} records no digests of its weights (edited, or a run from an older "
                "version), so nothing says model/ holds the weights it was fit with; if you know where "
                "this run comes from, load it with --trust-unverified-run (Python: "
                "Run.load(..., trust_unverified=True)), or fit again"
            )
        logger.warning(
            "%s: run.json records no digests of its weights; loaded because you trust it", directory
        )
        return
    found = file_digests(directory)
    changed = sorted(name for name in set(recorded) & set(found) if recorded[name] != found[name])
    missing, extra = sorted(set(recorded) - set(found)), sorted(set(found) - set(recorded))
    if changed or missing or extra:
        what = "; ".join(
            f"{label}: {', '.join(names)}"
            for label, names in (("changed", changed), ("missing", missing), ("not from the fit", extra))
            if names
        )
        raise RunIntegrityError(
            f"{directory}: its weight files are not those the fit wrote ({what}); run.json records the "
            "sha256 of each, so these rewards would come from other weights. Restore the run's own "
            "files, or fit again"
        )


def embed_log(
    log: FeedbackLog,
    encoder_config: EncoderConfig | None = None,
    cache_root: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    encoder: TextEncoder | None = None,
) -> tuple[np.ndarray, TextEncoder]:
    """``(N, dim)`` embeddings of a log's rows, through the on-disk cache unless ``use_cache`` is off."""
    encoder = encoder or TextEncoder(encoder_config)
    cache = open_cache(encoder, cache_root or default_cache_root()) if use_cache else None
    return embed_rows(log.encoder_prompts, log.responses, encoder, cache, progress=progress), encoder


def check_encoder_reading(embeddings: np.ndarray, config: EncoderConfig) -> None:
    """:func:`check_embeddings_vary` for embeddings an encoder just made, naming its reading."""
    check_embeddings_vary(
        embeddings,
        f"the encoder {config.model} read with pooling {config.pooling!r} at layer {config.layer}",
        "choose another --encoder-pooling (a decoder reads its last token) or --encoder-layer",
    )


def check_embeddings_vary(embeddings: np.ndarray, source: str, fix: str, sample: int = 4096) -> None:
    """Refuse embeddings ``(N, D)`` whose rows are all (nearly) equal, an effective rank of one:
    every reward would be the same. ``source`` says where they came from, ``fix`` what to do.

    Raises:
        ValueError: where the rows' spread is below 1e-5 of their size.
    """
    if len(embeddings) < 2:
        return
    rows = np.asarray(
        embeddings[np.linspace(0, len(embeddings) - 1, min(sample, len(embeddings))).astype(int)]
    )
    rows = rows.astype(np.float64)
    size = np.linalg.norm(rows)
    spread = np.linalg.norm(rows - rows.mean(axis=0))
    if size > 0 and spread > 1e-5 * size:
        return
    raise ValueError(
        f"every row's embedding from {source} is the same (their spread is {spread / max(size, 1e-300):.1e} "
        f"of their size), so every reward would be the same; {fix}"
    )


def embeddings_for(
    log: FeedbackLog,
    embeddings_path: str | Path | None,
    encoder_config: EncoderConfig | None,
    cache_root: str | Path | None = None,
    progress: bool = False,
    encoder: TextEncoder | None = None,
    vary: bool = False,
) -> tuple[np.ndarray, dict]:
    """A log's embeddings, from a file written by ``pyro-irm embed`` or by encoding (cached) with
    ``encoder`` or one built from ``encoder_config``, with the encoder's description
    (``{"encoder": config, "identity": ...}``). ``vary``: refuse rows that are all the same (what a
    fit needs; scoring one text many times is fine)."""
    if embeddings_path is not None:
        embeddings, metadata = load_embeddings(embeddings_path)
        if vary:
            check_embeddings_vary(
                embeddings, str(embeddings_path), "embed the log again with another reading"
            )
        if embeddings.shape[0] != len(log):
            raise ValueError(
                f"{embeddings_path} has {embeddings.shape[0]} rows but the log has {len(log)} usable rows; "
                "embed this log with the same column mapping and bad-row handling"
            )
        check_rows_fingerprint(embeddings_path, metadata, log)
        return embeddings, {k: metadata.get(k) for k in ("encoder", "identity")}
    embeddings, encoder = embed_log(log, encoder_config, cache_root, progress=progress, encoder=encoder)
    if vary:
        check_encoder_reading(embeddings, encoder.config)
    return embeddings, {"encoder": encoder.config.to_dict(), "identity": encoder.identity}


def check_rows_fingerprint(embeddings_path: str | Path, metadata: dict, log: FeedbackLog) -> None:
    """Refuse embeddings whose sidecar names other rows than ``log``'s (another log, another order,
    other bad-row handling); warn when there is no fingerprint to check."""
    expected = metadata.get("rows_fingerprint")
    if expected is None:
        logger.warning(
            "%s: no rows fingerprint beside it (in its .json), so nothing checks that its rows are this "
            "log's rows in this order; embed the log with `pyro-irm embed` to have one",
            embeddings_path,
        )
        return
    if rows_fingerprint(log.prompts, log.responses) != expected:
        made_from = metadata.get("log", "another log")
        raise ValueError(
            f"{embeddings_path} was embedded from other rows than {log.report.source} ({made_from}; "
            "another log, another row order or other bad-row handling); embed this log with "
            "`pyro-irm embed` using the same column mapping"
        )


@dataclass
class Run:
    """A fitted model loaded from its run directory."""

    directory: Path
    reward_model: RewardModel
    method: str
    encoder: EncoderConfig | None
    schema: LogSchema
    info: dict

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str = "cpu",
        trust: tuple[str, ...] = (),
        trust_unverified: bool = False,
    ) -> Run:
        """Load a run directory as data: its weights are checked against the digests in ``run.json``
        (a run without them is refused unless ``trust_unverified``), and the classes it names load
        only from pyro_irm, the modules in ``trust`` and those trusted already
        (:func:`~pyro_irm.models.components.trust_modules`)."""
        from pyro_irm.models.components import trust_modules

        trust_modules(*trust)
        directory = Path(directory)
        run_file = directory / RUN_FILE
        if not run_file.is_file():
            raise FileNotFoundError(
                f"{directory} is not a run directory (no {RUN_FILE}); make one with `pyro-irm fit`"
            )
        try:
            info = json.loads(run_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{run_file}: not valid JSON ({error}); not written by pyro-irm fit") from None
        if not isinstance(info, dict) or "method" not in info or "schema" not in info:
            raise ValueError(f"{run_file}: not a run description (no 'method' or 'schema'); fit again")
        for key, kinds in _INFO_TYPES.items():
            if key in info and not isinstance(info[key], kinds):
                raise ValueError(
                    f"{run_file}: {key!r} is {type(info[key]).__name__}, not what pyro-irm fit writes; "
                    "the file was edited or damaged; fit again"
                )
        verify_digests(directory, info.get("digests"), trust_unverified)
        try:
            return cls._from_info(directory, info, device)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            if isinstance(error, ValueError) and str(directory) in str(error):
                raise  # a file of the run, named already
            raise ValueError(
                f"{run_file}: not a run description this version reads ({type(error).__name__}: {error}); "
                "it was edited or written by another version; fit again"
            ) from None

    @classmethod
    def _from_info(cls, directory: Path, info: dict, device: str) -> Run:
        encoder = info.get("encoder")
        if encoder is not None and encoder["model"] == ENCODER_DIR and (directory / ENCODER_DIR).is_dir():
            encoder = {**encoder, "model": str((directory / ENCODER_DIR).resolve())}
        return cls(
            directory=directory,
            reward_model=RewardModel.load(directory / MODEL_DIR, device=device),
            method=info["method"],
            encoder=None if encoder is None else EncoderConfig(**encoder),
            schema=schema_from_dict(info["schema"]),
            info=info,
        )

    @property
    def name(self) -> str:
        return self.directory.name

    def feedback(self, log: FeedbackLog, embeddings: np.ndarray):
        """A log's rows as this run's model sees them (see :func:`run_feedback`)."""
        return run_feedback(self, log, embeddings)

    def verify_encoder(self, identity: dict, ignore: tuple[str, ...] = ()) -> None:
        """Refuse an encoder that reads texts otherwise than the one the run was fit on, or whose
        weights (hub revision, local directory's digest) changed since. Settings in ``ignore``
        (those a caller overrides on purpose) and settings either side lacks are not compared.

        Raises:
            ValueError: naming each setting that differs.
        """
        fitted = dict(self.info.get("encoder_identity") or {})
        if fitted.get("text_mode") == "chat":
            fitted.setdefault("chat_end", _EARLIER_CHAT_END)
        own_encoder = (self.directory / ENCODER_DIR).is_dir()  # its digests cover the weights
        keys = _ENCODER_READING if own_encoder else _ENCODER_READING + _ENCODER_WEIGHTS
        differ = [
            key for key in keys
            if key not in ignore and fitted.get(key) is not None and identity.get(key) is not None
            and fitted[key] != identity[key]
        ]  # fmt: skip
        if differ:
            settings = "; ".join(f"{k}: {fitted[k]!r} at the fit, {identity[k]!r} now" for k in differ)
            weights = any(key in _ENCODER_WEIGHTS for key in differ)
            raise ValueError(
                f"{self.directory} was fit on another encoder than {self.encoder.model!r} is now "
                f"({settings}); "
                + (
                    "its weights changed since the fit: load the revision the run names, or fit again"
                    if weights
                    else "score with the run's own encoder settings"
                )  # fmt: skip
            )

    def text_encoder(self, **overrides) -> TextEncoder:
        """The run's encoder (with ``overrides`` of its config such as ``device``), checked against
        the one it was fit on (:meth:`verify_encoder`)."""
        from dataclasses import replace

        if self.encoder is None:
            raise ValueError(
                f"{self.directory} was fit on precomputed embeddings, so it names no encoder to read texts"
            )
        encoder = TextEncoder(replace(self.encoder, **overrides))
        self.verify_encoder(encoder.identity, ignore=tuple(overrides))
        return encoder

    def export_hf(self, directory: str | Path, format: str = "auto") -> Path:
        """Write this run's reward model and encoder as a ``transformers`` directory (see
        :func:`pyro_irm.export.export_hf`; ``format``: 'stock', 'remote-code' or 'auto')."""
        from pyro_irm.export import export_hf

        if self.encoder is None:
            raise ValueError(
                f"{self.directory} was fit on precomputed embeddings (--embeddings), so it names no "
                "encoder to export; fit from text (the run encodes the log) to export it"
            )
        from pyro_irm.encoders.encoder import local_fingerprint, resolve_model_location

        location, source = resolve_model_location(self.encoder.model)
        if source != "hub":  # a hub model's revision is checked where it is loaded to encode
            self.verify_encoder({"fingerprint": local_fingerprint(location)})
        stats = self.info.get("reward_stats")
        if stats is None:
            raise ValueError(
                f"{self.directory}: run.json has no reward_stats (a run from an older version); fit it again"
            )
        return export_hf(
            self.reward_model, self.encoder, directory, stats, source=str(self.directory), format=format
        )


def schema_from_dict(values: dict) -> LogSchema:
    """The :class:`LogSchema` of a run's ``run.json`` (JSON lists back to tuples; fields a run
    written by an earlier version lacks keep their defaults, except that such a run refused empty
    action cells)."""
    values = dict(values)
    values.setdefault("missing_actions", "refuse")

    def tuples(value):
        return tuple(tuples(v) for v in value) if isinstance(value, list) else value

    values = {key: tuples(value) for key, value in values.items()}
    values["action_thresholds"] = tuple((name, float(v)) for name, v in values.get("action_thresholds", ()))
    return LogSchema(**values)


def fit_log(
    log: FeedbackLog,
    embeddings: np.ndarray,
    train_config: TrainConfig | None = None,
    model_config: ModelConfig | None = None,
    estimator_config: EstimatorConfig | None = None,
    model=None,
) -> FitResult:
    """Fit a model to a log whose rows are embedded in ``embeddings`` ``(N, D)``; ``model``: one
    built from your own parts, as :func:`pyro_irm.fit` takes it."""
    return fit(log.to_feedback(embeddings), train_config, model_config, estimator_config, model=model)


def save_run(
    directory: str | Path,
    result: FitResult,
    log: FeedbackLog,
    embeddings: np.ndarray,
    schema: LogSchema,
    model_config: ModelConfig,
    encoder_info: dict,
    source: str,
    read_settings: dict | None = None,
) -> Path:
    """Write a run directory (see the module docstring), whole or not at all; returns it.
    ``read_settings`` (``skip_bad_rows``, ``max_bad_fraction``): how the log was read, which the
    commands on the run reuse."""
    target = Path(directory)
    with atomic_directory(target, marker=RUN_FILE) as directory:
        _write_run(
            directory, result, log, embeddings, schema, model_config, encoder_info, source, read_settings
        )
    return target


def _write_run(
    directory, result, log, embeddings, schema, model_config, encoder_info, source, read_settings
) -> None:
    result.reward_model.save(directory / MODEL_DIR)
    if getattr(result, "encoder", None) is not None:  # fine-tuned: the run keeps its own encoder
        result.save_encoder(directory / ENCODER_DIR)
        encoder_info = {**encoder_info, "encoder": {**encoder_info["encoder"], "model": ENCODER_DIR}}
    info = {
        "method": result.method,
        "train_config": asdict(result.config),
        "model_config": asdict(model_config),
        "encoder": encoder_info.get("encoder"),
        "encoder_identity": encoder_info.get("identity"),
        "schema": asdict(schema),
        **log_identity(source, log.source_sha256),
        "read": read_settings,
        "rows": len(log),
        "device": result.device,
        "nuisance": result.nuisance_sources,
        "users": log.user_vocabulary() if log.user_ids is not None else None,
        "context_scaling": list(log.context_scaling()) if log.context is not None else None,
        # Over every row of the training log, for RLHF code that normalizes rewards.
        "reward_stats": reward_stats(result.reward_model.score(embeddings)),
    }
    info["digests"] = file_digests(directory)
    (directory / RUN_FILE).write_text(strict_json(info, indent=2) + "\n")
    history = result.history
    metrics: dict = {
        "fit": {
            "epochs": history.epochs,
            "best_epoch": history.best_epoch + 1,
            "stopped_early": history.stopped_early,
            "best_heldout_score_per_row": history.validation_score[history.best_epoch]
            if history.validation_score and history.best_epoch >= 0
            else None,
            "selection_criterion": "held-out ELBO"
            if get_estimator(result.method).family == "pyro"
            else "minus the method's held-out risk",
            "final_train_loss_per_row": history.train_loss[-1] if history.train_loss else None,
            "seconds": sum(history.epoch_seconds),
            "rows_per_second": result.rows_per_second,
        }
    }
    check = getattr(result, "identification", None)
    if check is not None:
        metrics["identification"] = {
            "note": "does the data decide the preference/engagement split? (held-out rows; "
            "pyro_irm.inference.identification)",
            **check.to_dict(),
        }
    if log.has_labels:
        from pyro_irm.analysis.metrics import label_metrics  # scikit-learn: only where labels are

        probability = result.reward_model.preference_probability(embeddings).numpy()
        used = (
            "used to fit (--fit-labels)" if result.config.fit_labels else "reported only, never used to fit"
        )
        metrics["training_log_labels"] = {
            "note": f"explicit labels of the training log; {used}, never to select",
            **label_metrics(log.labels, probability, log.prompt_ids, true_scores(log)),
        }
    (directory / METRICS_FILE).write_text(strict_json(metrics, indent=2) + "\n")
    objective = "ELBO" if get_estimator(result.method).family == "pyro" else "minus risk"
    plot_fit_history(
        history, directory / ELBO_PLOT, title=f"{result.method} on {Path(source).name}", objective=objective
    )


def run_feedback(run: Run, log: FeedbackLog, embeddings: np.ndarray):
    """A log's rows as the run's model sees them: its users and context scaled as in training."""
    scaling = run.info.get("context_scaling")
    users = run.info.get("users") or None
    if users and log.user_ids is not None:
        known = set(users)
        unseen = sorted({u for u in log.user_ids if u not in known})
        share = sum(u not in known for u in log.user_ids) / max(len(log), 1)
        if share > 0.5:
            logger.warning(
                "%s: %d of its users (%.0f%% of rows) were not in %s's training log (such as %r; the run "
                "knows %r, ...), so their rewards use the prior over users. Check that --user-col "
                "names the same ids",
                log.report.source, len(unseen), 100 * share, run.directory, unseen[0], users[0],
            )  # fmt: skip
    return log.to_feedback(
        embeddings,
        user_vocabulary=users,
        context_scaling=None if scaling is None else tuple(scaling),
    )


def run_groups(run: Run, log: FeedbackLog, embeddings: np.ndarray):
    """``(N, 4)`` posterior group probabilities of a log's rows under a run's model, given their
    actions, context and users."""
    data = run_feedback(run, log, embeddings)
    return run.reward_model.posterior_groups(
        data.embeddings, data.actions, data.context, observed=data.observed, users=data.users
    )


def true_scores(log: FeedbackLog) -> np.ndarray | None:
    """A simulated log's graded true score per row, else None."""
    return None if log.truth is None else log.truth["score"]
