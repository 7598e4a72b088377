"""What every command shares: exit codes, the global options, status lines, the cache and estimator
options, JSON output, a run's embeddings of a log.

Command modules import only configurations (no torch) at the top, so that building the parser and
answering ``--help`` is fast; each command imports what it computes with when it runs.
"""

from __future__ import annotations

import argparse
import sys

from pyro_irm.atomic import write_json_atomic
from pyro_irm.cli.options import add_dataclass_options, build_config, dataclass_values
from pyro_irm.estimators.config import EstimatorConfig

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def global_options(defaults: bool) -> argparse.ArgumentParser:
    """Options every command accepts before or after its name. The main parser holds the defaults;
    a subcommand's copy leaves the value alone unless the flag is given after the command."""
    parser = argparse.ArgumentParser(add_help=False)
    default = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details", **default)
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or status lines", **default
    )
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import MODULE (a module name or a .py file) first (repeatable): its estimators, channels and "
        "other parts, registered on import, become choices here, and a saved run may name its classes (as "
        "may installed packages' 'pyro_irm.plugins' entry points); nothing else a run names is imported",
        **({"default": []} if defaults else default),
    )
    return parser


PLUGIN_GROUP = "pyro_irm.plugins"


def import_plugins(argv: list[str]) -> list[str]:
    """Import the ``--plugin`` modules (or ``.py`` files) named in ``argv`` and every installed
    ``pyro_irm.plugins`` entry point, before the parser is built (their registrations add choices
    such as ``--method``), and trust them: a saved run may name their classes. An entry point that
    fails to import is skipped with a warning (it is another package's fault, not this command's).
    Returns the modules imported.

    Raises:
        ValueError: naming a ``--plugin`` that does not import, and why.
    """
    import warnings
    from importlib.metadata import entry_points

    from pyro_irm.models.components import trust_modules

    wanted = []
    for index, word in enumerate(argv):
        if word == "--plugin" and index + 1 < len(argv):
            wanted.append(argv[index + 1])
        elif word.startswith("--plugin="):
            wanted.append(word.partition("=")[2])
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as error:  # noqa: BLE001 - any failure of another package's code
            warnings.warn(
                f"the installed plugin {entry.name} ({entry.value}, entry point group {PLUGIN_GROUP}) "
                f"does not import and is skipped ({type(error).__name__}: {error}); fix or uninstall "
                "the package that declares it",
                stacklevel=2,
            )
            continue
        trust_modules(entry.module)
    modules = [_import_plugin(name) for name in wanted]
    trust_modules(*modules)
    return modules


def _import_plugin(name: str) -> str:
    """Import ``--plugin NAME``: a module name, or a ``.py`` file imported under its stem. Returns
    the module's name."""
    import importlib
    import importlib.util
    from pathlib import Path

    path = Path(name)
    if name.endswith(".py") or "/" in name or path.is_file():
        if not path.is_file():
            raise ValueError(f"--plugin {name}: no such file")
        module_name = path.stem
        if not module_name.isidentifier():
            raise ValueError(
                f"--plugin {name}: {module_name!r} is not a module name; rename the file (letters, "
                "digits and _)"
            )
        spec = importlib.util.spec_from_file_location(module_name, path.resolve())
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - the user's file, named with its fault
            sys.modules.pop(module_name, None)
            raise ValueError(f"--plugin {name}: does not import ({type(error).__name__}: {error})") from None
        return module_name
    try:
        importlib.import_module(name)
    except ImportError as error:
        raise ValueError(
            f"--plugin {name}: does not import ({error}); put its directory on PYTHONPATH, install it, "
            "or give the file's path"
        ) from None
    except Exception as error:  # noqa: BLE001 - the user's module, named with its fault
        raise ValueError(f"--plugin {name}: fails as it imports ({type(error).__name__}: {error})") from None
    return name


def add_run_trust_option(parser) -> None:
    parser.add_argument(
        "--trust-unverified-run",
        action="store_true",
        help="load a run whose run.json records no digests of its weights (an older version's, or "
        "edited); without it such a run is refused. Its classes still load only from pyro_irm and --plugin",
    )


def load_run(args: argparse.Namespace, directory, device: str = "cpu"):
    """The run at ``directory`` as :meth:`~pyro_irm.runs.Run.load` reads it, with the command's
    ``--trust-unverified-run``."""
    from pyro_irm.runs import Run

    return Run.load(directory, device=device, trust_unverified=getattr(args, "trust_unverified_run", False))


def say(args: argparse.Namespace, message: str) -> None:
    """Status lines go to stderr, so stdout carries only results (tables, scores)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def add_cache_option(parser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="embedding cache root (default: $PYRO_IRM_CACHE, else the user cache)",
    )


def refuse_overwriting_inputs(
    outputs: dict[str, object], inputs: dict[str, object], directories: bool = False
) -> None:
    """Raise before any work when an output would lose an input: an output path that is one of
    the command's inputs, a directory output that holds one (it is replaced whole), or an output
    inside an input run's weights (``model/``, ``encoder/``: their digests would no longer hold).
    Every output path is checked as :func:`~pyro_irm.atomic.check_output_path` checks it, and,
    unless the outputs are ``directories``, refused where it is a directory.
    ``outputs`` and ``inputs`` map a name (the flag or argument) to a path; None entries are skipped."""
    from pathlib import Path

    from pyro_irm.atomic import check_output_path

    def where(path) -> Path:
        return Path(path).expanduser().resolve()

    for out_name, out in outputs.items():
        if out is None:
            continue
        check_output_path(Path(out).expanduser())
        if not directories and Path(out).expanduser().is_dir():
            raise ValueError(f"{out_name} {out} is a directory; give a file path")
        target = where(out)
        for in_name, source in inputs.items():
            if source is None:
                continue
            source_path = where(source)
            if target == source_path or (
                Path(out).exists() and Path(source).exists() and Path(out).samefile(source)
            ):
                problem = f"is the {in_name}: writing there would replace it"
            elif target in source_path.parents:
                problem = f"holds the {in_name} ({source}): the output directory is replaced whole"
            elif any(source_path / part in (target, *target.parents) for part in ("model", "encoder")):
                problem = f"is inside the {in_name}'s weights: its digests would no longer hold"
            else:
                continue
            raise ValueError(f"{out_name} {out} {problem}; write to another path")


def write_json(args: argparse.Namespace, payload: dict) -> None:
    """Write ``payload`` to ``--json`` when it was given."""
    if args.json:
        write_json_atomic(args.json, payload)
        say(args, f"Wrote {args.json}")


def run_embeddings(run, log, args: argparse.Namespace):
    """The log's ``(N, D)`` embeddings: ``--embeddings`` if given, else encoded (cached) with the
    run's encoder."""
    from pyro_irm.runs import embeddings_for

    if args.embeddings is None and run.encoder is None:
        raise ValueError(
            f"{run.directory} was fit on precomputed embeddings; pass --embeddings for {log.report.source}"
        )
    encoder = run.text_encoder() if args.embeddings is None else None
    embeddings, described = embeddings_for(
        log, args.embeddings, None, args.cache_dir, not args.quiet, encoder=encoder
    )
    if args.embeddings is not None:
        check_same_encoder(args.embeddings, described.get("identity"), run)
    return embeddings


def check_same_encoder(embeddings_path, identity: dict | None, run) -> None:
    """Refuse embeddings whose sidecar names another encoder reading (model, pooling, layer, text
    mode, template, ...) than the one the run was fit on: they have the right width and would score
    wrong without a word. Only the settings both record are compared, so older runs still load."""
    fitted = run.info.get("encoder_identity")
    if not identity or not fitted:
        return
    differ = sorted(k for k in set(identity) & set(fitted) if identity[k] != fitted[k])
    if differ:
        settings = "; ".join(f"{k}: {identity[k]!r} there, {fitted[k]!r} in the run" for k in differ)
        raise ValueError(
            f"{embeddings_path} was embedded with another encoder than {run.directory} was fit on "
            f"({settings}); embed the log with the run's encoder settings, or leave out --embeddings "
            "and the run encodes it"
        )


def add_estimator_options(parser) -> None:
    """The baseline estimators' options (:class:`~pyro_irm.inference.config.EstimatorConfig`).
    CausalRM's flip rates are the model's ``eps0`` and ``eps1`` (given to the model or the
    simulation under the plain names), so here they are named for the estimator that reads them."""
    group = parser.add_argument_group("baseline estimators (propensity, class prior, flip rates)")
    rename = {"eps0": "causalrm_eps0", "eps1": "causalrm_eps1"}
    add_dataclass_options(group, EstimatorConfig, "est_", rename=rename)


def estimator_config(args: argparse.Namespace, file_config: dict):
    """The :class:`~pyro_irm.inference.config.EstimatorConfig` of the options over ``[estimator]``."""
    values = dataclass_values(args, EstimatorConfig, "est_")
    return build_config(EstimatorConfig, file_config.get("estimator"), values, "[estimator]")
