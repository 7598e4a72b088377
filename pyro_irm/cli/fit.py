"""``pyro-irm fit``: a reward model fit to a log, written as a run directory."""

from __future__ import annotations

import argparse

from pyro_irm.cli.common import (
    EXIT_OK,
    add_estimator_options,
    estimator_config,
    refuse_overwriting_inputs,
    say,
)
from pyro_irm.cli.embed import add_encoder_options, encoder_config
from pyro_irm.cli.options import add_dataclass_options, build_config, dataclass_values, read_config_file
from pyro_irm.cli.schema import add_schema_options, read_log_from_args, read_settings, schema_from_args
from pyro_irm.inference.config import HEAD_METHODS, FinetuneConfig, HeadConfig, TrainConfig
from pyro_irm.models.config import ModelConfig


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "fit",
        parents=parents,
        help="fit a reward model to a log (implicitrm or any baseline)",
        description="Fit a model to a log's implicit actions (or, with --observed-col, an observational "
        "log's feedback) and write a run directory: the model, its configuration, metrics and the "
        "training plot. Settings come from flags, a --config file ([train], [model], [estimator], "
        "[encoder], [head] sections), then the defaults.",
    )
    parser.add_argument("log", help="log file, saved data set directory or hub name")
    parser.add_argument("--out", metavar="PATH", required=True, help="run directory to write")
    parser.add_argument(
        "--embeddings", metavar="FILE", help="precomputed embeddings of this log (from `pyro-irm embed`)"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON configuration file")
    parser.add_argument(
        "--bayesian-head",
        choices=HEAD_METHODS,
        help="after the fit, give the reward a posterior (per-row reward intervals): 'network' (a "
        "linearized Laplace posterior over every layer, prior scale by marginal likelihood), or the "
        "last layer only: 'laplace' (Gaussian at the fitted layer), 'svi' or 'nuts'",
    )
    add_dataclass_options(
        parser.add_argument_group("Bayesian head (--bayesian-head)"),
        HeadConfig,
        "head_",
        skip=("seed", "progress"),
        flag_prefix="head_",
    )
    parser.add_argument(
        "--finetune-encoder",
        dest="fine_tune",
        choices=("lora", "full"),
        help="implicitrm: train the encoder with the heads, through the amortized guide: LoRA adapters "
        "(peft) or every weight; the trained encoder is saved in the run (and exported with it)",
    )
    add_dataclass_options(
        parser.add_argument_group("fine-tuning (--finetune-encoder)"),
        FinetuneConfig,
        "finetune_",
        skip=("mode",),
        flag_prefix="finetune_",
    )
    add_schema_options(parser)
    add_dataclass_options(parser.add_argument_group("training"), TrainConfig, "train_", skip=("progress",))
    add_dataclass_options(parser.add_argument_group("model"), ModelConfig, "model_")
    add_estimator_options(parser)
    add_encoder_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.atomic import check_replaceable
    from pyro_irm.runs import RUN_FILE, embeddings_for, fit_log

    file_config = (
        read_config_file(args.config, ("train", "model", "estimator", "encoder", "finetune", "head"))
        if args.config
        else {}
    )
    train_values = dataclass_values(args, TrainConfig, "train_")
    train_values.setdefault("progress", not args.quiet)
    train_config = build_config(TrainConfig, file_config.get("train"), train_values, "[train]")
    model_config = build_config(
        ModelConfig, file_config.get("model"), dataclass_values(args, ModelConfig, "model_"), "[model]"
    )
    estimators = estimator_config(args, file_config)
    encoder = encoder_config(args, file_config)
    check_replaceable(args.out, RUN_FILE)  # before the fit, not after it
    refuse_overwriting_inputs(
        {"--out": args.out},
        {"log": args.log, "--embeddings": args.embeddings, "--config": args.config},
        directories=True,
    )
    schema = schema_from_args(args)
    log = read_log_from_args(args, args.log, schema)
    schema = log.schema or schema  # its format decided
    if args.fine_tune:
        return _fit_with_encoder(args, file_config, log, schema, train_config, model_config, encoder)
    if train_config.devices > 1 and args.embeddings is None:
        raise ValueError(
            f"--devices {train_config.devices}: every process reads the embeddings, so embed the log "
            "first (pyro-irm embed LOG --out FILE.npy) and pass --embeddings FILE.npy"
        )
    embeddings, encoder_info = embeddings_for(
        log, args.embeddings, encoder, args.cache_dir, not args.quiet, vary=True
    )
    rates = ", ".join(
        _channel_rate(name, channel, values)
        for name, channel, values in zip(log.action_names, log.channels, log.actions.T, strict=True)
    )
    say(args, f"Fitting {train_config.method} on {len(log):,} rows ({rates}).")
    result = fit_log(log, embeddings, train_config, model_config, estimators)
    return _finish(args, file_config, result, log, embeddings, schema, model_config, encoder_info)


def _channel_rate(name, channel, values) -> str:
    """``copied 21.7%`` or ``seconds_on_page mean 31.2 (34 empty)``: over the cells that hold a value."""
    import numpy as np

    present = values[~np.isnan(values)]
    empty = f" ({len(values) - len(present)} empty)" if len(present) < len(values) else ""
    if not len(present):
        return f"{name}: every cell empty"
    if channel.kind == "binary":
        return f"{name} {present.mean():.1%}{empty}"
    return f"{name} mean {present.mean():.3g}{empty}"


def _fit_with_encoder(args, file_config, log, schema, train_config, model_config, encoder) -> int:
    """``--finetune-encoder``: the encoder trained with ImplicitRM's heads, then saved in the run."""
    from pyro_irm.inference.finetune import finetune

    if args.embeddings:
        raise ValueError("--finetune-encoder trains the encoder on the log's text: drop --embeddings")
    values = {**dataclass_values(args, FinetuneConfig, "finetune_"), "mode": args.fine_tune}
    config = build_config(FinetuneConfig, file_config.get("finetune"), values, "[finetune]")
    say(args, f"Fine-tuning {encoder.model} ({config.mode}) with implicitrm on {len(log):,} rows.")
    result = finetune(log, encoder, train_config, model_config, config)
    embeddings = result.encoder.encode(log.encoder_prompts, log.responses)
    encoder_info = {"encoder": encoder.to_dict(), "identity": result.encoder.identity}
    return _finish(args, file_config, result, log, embeddings, schema, model_config, encoder_info)


def _finish(args, file_config, result, log, embeddings, schema, model_config, encoder_info) -> int:
    """The Bayesian head when asked, then the run directory."""
    from pyro_irm.inference.bayesian_head import fit_bayesian_head
    from pyro_irm.runs import save_run

    train_config = result.config
    if not result.is_main_process:  # another process of a multi-process fit: the first one writes
        return EXIT_OK
    if args.bayesian_head:
        data = log.to_feedback(embeddings)
        head_values = dataclass_values(args, HeadConfig, "head_")
        head_values.setdefault("progress", not args.quiet)
        head_config = build_config(HeadConfig, file_config.get("head"), head_values, "[head]")
        say(args, f"Fitting a Bayesian reward head ({args.bayesian_head}).")
        result.reward_model.head_posterior = fit_bayesian_head(
            result.reward_model,
            data.embeddings,
            data.actions,
            data.context,
            args.bayesian_head,
            head_config,
            observed=data.observed,
            users=data.users,
            labels=data.labels if train_config.fit_labels else None,
        )
    out = save_run(
        args.out,
        result,
        log,
        embeddings,
        schema,
        model_config,
        encoder_info,
        str(args.log),
        read_settings(args),
    )
    history = result.history
    print(
        f"Wrote {out}: {result.method}, {history.epochs} epochs (kept {history.best_epoch + 1}), "
        f"{sum(history.epoch_seconds):.1f} s."
    )
    return EXIT_OK
