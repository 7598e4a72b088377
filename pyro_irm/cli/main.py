"""The ``pyro-irm`` command line: thin argument parsing over the Python API.

Exit codes: 0 success; 2 bad input or usage (the message names the file, row and field); 130
interrupted; 1 anything unexpected (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np

from pyro_irm.atomic import check_replaceable, write_json_atomic
from pyro_irm.cli.benchmark import add_benchmark_parser
from pyro_irm.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_cache_option,
    add_quiet_option,
    run_embeddings,
    say,
)
from pyro_irm.cli.options import add_dataclass_options, build_config, dataclass_values, read_config_file
from pyro_irm.cli.rlhf import add_rlhf_parsers
from pyro_irm.cli.schema import (
    add_bad_fraction_option,
    add_schema_options,
    read_log_from_args,
    schema_from_args,
)
from pyro_irm.data.chatlog import ChatLogConfig, chatlog_records
from pyro_irm.data.logs import LogSchema, write_records
from pyro_irm.data.pairs import read_pairs
from pyro_irm.data.preference_sets import PREFERENCE_SETS, load_preference_set, simulate_log
from pyro_irm.data.samples import ultrafeedback_sample
from pyro_irm.data.simulate import SimulationConfig
from pyro_irm.demo import DemoConfig, run_demo
from pyro_irm.encoders.cache import rows_fingerprint
from pyro_irm.encoders.config import EncoderConfig
from pyro_irm.encoders.embed import save_embeddings
from pyro_irm.groups import GROUP_NAMES
from pyro_irm.inference.bayesian_head import HEAD_METHODS, HeadConfig
from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.nuisance import EstimatorConfig
from pyro_irm.models.config import ModelConfig
from pyro_irm.runs import (
    RUN_FILE,
    Run,
    embed_log,
    embeddings_for,
    evaluate_pairs,
    evaluate_run,
    fit_log,
    run_groups,
    save_run,
)

DEMO_COLUMNS = (
    ("auc", "AUC"),
    ("mae", "MAE"),
    ("ece", "ECE"),
    ("group_accuracy", "group acc."),
    ("no_action_group_accuracy", "no-action group acc."),
)
EVALUATE_COLUMNS = (
    ("auc", "AUC"),
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("r2", "R^2"),
    ("log_loss", "log-loss"),
    ("ece", "ECE"),
    ("pairwise_accuracy", "pairwise acc."),
    ("length_bias", "length bias"),
)
PAIR_COLUMNS = (
    ("accuracy", "accuracy"),
    ("mean_margin", "mean margin"),
    ("prefers_longer", "prefers longer"),
    ("chosen_longer", "chosen longer"),
    ("length_bias", "length bias"),
)


def format_table(results: dict[str, dict[str, float]], columns=DEMO_COLUMNS, width: int = 22) -> str:
    """A fixed-width table: one row per method, one column per metric in ``columns``."""
    name_width = max([12, *(len(name) + 2 for name in results)])
    header = f"{'method':<{name_width}}" + "".join(f"{title:>{width}}" for _, title in columns)
    lines = [header, "-" * len(header)]
    for method, metrics in results.items():
        cells = (_cell(metrics[key]) if key in metrics else "—" for key, _ in columns)
        lines.append(f"{method:<{name_width}}" + "".join(f"{cell:>{width}}" for cell in cells))
    return "\n".join(lines)


def _cell(value) -> str:
    return value if isinstance(value, str) else f"{value:.3f}"


# ---------------------------------------------------------------- shared option groups


def _read(args: argparse.Namespace, source: str, schema: LogSchema):
    return read_log_from_args(args, source, schema)


def _add_encoder_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("encoder (used when --embeddings is not given)")
    add_dataclass_options(
        group, EncoderConfig, "encoder_", rename={"model": "encoder"}, flag_prefix="encoder_"
    )
    add_cache_option(group)


def _encoder_config(args: argparse.Namespace, file_config: dict | None = None) -> EncoderConfig:
    section = (file_config or {}).get("encoder")
    return build_config(
        EncoderConfig, section, dataclass_values(args, EncoderConfig, "encoder_"), "[encoder]"
    )


# ---------------------------------------------------------------- commands


def _demo(args: argparse.Namespace) -> int:
    config = DemoConfig(
        train_rows=args.rows,
        test_rows=args.test_rows,
        seed=args.seed,
        inference=args.inference,
        max_epochs=args.epochs,
        progress=not args.quiet,
    )
    print(
        f"Simulating {config.train_rows:,} training and {config.test_rows:,} test rows with strong "
        "propensity bias (a response feature and the display position drive who acts)."
    )
    started = time.perf_counter()
    results = run_demo(config)
    print(format_table(results))
    prior = results["implicitrm"]["no_action_prior_accuracy"]
    print(
        f"\nMetrics against the simulated truth on the test rows. On no-action rows, naming the most "
        f"frequent group would be right {prior:.3f} of the time. "
        f"Finished in {time.perf_counter() - started:.0f} s."
    )
    if args.json:
        _write_json(args.json, results)
        print(f"Wrote {args.json}")
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    file_config = read_config_file(args.config) if args.config else {}
    overrides = dataclass_values(args, SimulationConfig, "sim_")
    overrides.setdefault("propensity_form", "alpha_power")
    config = build_config(SimulationConfig, file_config.get("simulation"), overrides, "[simulation]")
    data_file = args.data_file
    if args.sample is not None:
        if args.dataset != "ultrafeedback" or data_file is not None:
            raise ValueError(
                "--sample is the bundled UltraFeedback sample: use it with --dataset ultrafeedback alone"
            )
        data_file = ultrafeedback_sample(args.sample)
    scored = load_preference_set(
        args.dataset,
        data_file,
        split=args.split,
        on_error="skip" if args.skip_bad_rows else "raise",
        limit=args.limit,
    )
    say(args, scored.report.summary())
    preferred = scored.preference
    if config.setting == "chatlog":
        chat_values = dataclass_values(args, ChatLogConfig, "chat_")
        chat_values.setdefault("seed", config.seed)
        chat_config = build_config(ChatLogConfig, file_config.get("chatlog"), chat_values, "[chatlog]")
        records = chatlog_records(
            scored.prompts, scored.responses, scored.prompt_ids, preferred, scored.scores, chat_config
        )
        write_records(args.out, records)
        rates = ", ".join(
            f"{name} {np.mean([r[name] for r in records]):.1%}"
            for name in ("copied", "thumbs_up", "regenerated")
        )
        labelled = sum(r["label"] is not None for r in records)
        print(
            f"Wrote {len(records):,} chat-log rows to {args.out}: {preferred.mean():.1%} preferred (score > "
            f"{scored.threshold:g}); {rates}; dwell_seconds; {labelled:,} labelled rows; "
            f"{chat_config.num_users} users. Read it with --action-col copied --action-col thumbs_up "
            "--negative-action-col regenerated --continuous-action-col dwell_seconds --user-col user_id "
            "--context-col position --context-col response_length --context-col has_code."
        )
        return EXIT_OK
    records = simulate_log(scored, config)
    write_records(args.out, records)
    actions = np.array([r["action"] for r in records])
    print(
        f"Wrote {len(records):,} rows to {args.out}: {preferred.mean():.1%} preferred (score > "
        f"{scored.threshold:g}), {actions.mean():.1%} with an action ({config.propensity_form} propensity, "
        f"observation rate {config.observation_rate:g})."
    )
    return EXIT_OK


def _embed(args: argparse.Namespace) -> int:
    log = _read(args, args.log, schema_from_args(args, actions=False, labels=False))
    config = _encoder_config(args)
    started = time.perf_counter()
    embeddings, encoder = embed_log(
        log, config, args.cache_dir, use_cache=not args.no_cache, progress=not args.quiet
    )
    metadata = {
        "encoder": config.to_dict(),
        "identity": encoder.identity,
        "log": str(args.log),
        "rows": len(log),
        "rows_fingerprint": rows_fingerprint(log.prompts, log.responses),
        "dim": encoder.dim,
    }
    save_embeddings(args.out, embeddings, metadata)
    print(
        f"Wrote {args.out}: {len(log):,} x {encoder.dim} embeddings in {time.perf_counter() - started:.1f} s "
        f"({encoder.rows_encoded:,} rows encoded, the rest read from the cache)."
    )
    return EXIT_OK


def _fit(args: argparse.Namespace) -> int:
    file_config = read_config_file(args.config) if args.config else {}
    train_values = dataclass_values(args, TrainConfig, "train_")
    train_values.setdefault("progress", not args.quiet)
    train_config = build_config(TrainConfig, file_config.get("train"), train_values, "[train]")
    model_config = build_config(
        ModelConfig, file_config.get("model"), dataclass_values(args, ModelConfig, "model_"), "[model]"
    )
    estimator_config = build_config(
        EstimatorConfig,
        file_config.get("estimator"),
        dataclass_values(args, EstimatorConfig, "est_"),
        "[estimator]",
    )
    encoder_config = _encoder_config(args, file_config)
    check_replaceable(args.out, RUN_FILE)  # before the fit, not after it
    schema = schema_from_args(args)
    log = _read(args, args.log, schema)
    embeddings, encoder_info = embeddings_for(
        log, args.embeddings, encoder_config, args.cache_dir, not args.quiet
    )
    rates = ", ".join(
        f"{name} {values.mean():.1%}" if channel.kind == "binary" else f"{name} mean {values.mean():.3g}"
        for name, channel, values in zip(log.action_names, log.channels, log.actions.T, strict=True)
    )
    say(args, f"Fitting {train_config.method} on {len(log):,} rows ({rates}).")
    result = fit_log(log, embeddings, train_config, model_config, estimator_config)
    if args.bayesian_head:
        data = log.to_feedback(embeddings)
        head_values = dataclass_values(args, HeadConfig, "head_")
        head_values.setdefault("progress", not args.quiet)
        head_config = build_config(HeadConfig, file_config.get("head"), head_values, "[head]")
        say(args, f"Fitting a Bayesian last layer by {args.bayesian_head}.")
        result.reward_model.fit_bayesian_head(
            data.embeddings,
            data.actions,
            data.context,
            args.bayesian_head,
            head_config,
            observed=data.observed,
            users=data.users,
            labels=data.labels if train_config.fit_labels else None,
        )
    out = save_run(args.out, result, log, embeddings, schema, model_config, encoder_info, str(args.log))
    history = result.history
    print(
        f"Wrote {out}: {result.method}, {history.epochs} epochs (kept {history.best_epoch + 1}), "
        f"{sum(history.epoch_seconds):.1f} s."
    )
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    run = Run.load(args.run_dir)
    schema = schema_from_args(args, actions=False, labels=False)
    log = _read(args, args.input, schema)
    if args.groups:
        log = _read(args, args.input, _groups_schema(run))
    embeddings = run_embeddings(run, log, args)
    rewards = run.reward_model.score(embeddings).numpy()
    probability = 1.0 / (1.0 + np.exp(-rewards.astype(np.float64)))
    groups = run_groups(run, log, embeddings).numpy() if args.groups else None
    records = [
        {
            "row": int(row),
            "prompt_id": prompt_id,
            "reward": float(reward),
            "preference_probability": float(p),
            **({} if groups is None else dict(zip(GROUP_NAMES, map(float, groups[i]), strict=True))),
            **({"prompt": prompt, "response": response} if args.with_text else {}),
        }
        for i, (row, prompt_id, reward, p, prompt, response) in enumerate(
            zip(
                log.source_rows,
                log.prompt_ids,
                rewards,
                probability,
                log.prompts,
                log.responses,
                strict=True,
            )
        )
    ]
    if args.out:
        write_records(args.out, records)
        say(args, f"Wrote {len(records):,} scores to {args.out}")
    else:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    return EXIT_OK


def _groups_schema(run: Run) -> LogSchema:
    """The run's own column mapping, so that the rows' actions, context and users are read too."""
    if run.method != "implicitrm":
        raise ValueError(f"--groups: {run.directory} is a {run.method} fit; only implicitrm has groups")
    return run.schema


def _evaluate(args: argparse.Namespace) -> int:
    if (args.log is None) == (args.pairs is None):
        raise ValueError(
            "give --log (rows with explicit labels) or --pairs (chosen/rejected pairs), not both"
        )
    if args.pairs is not None:
        return _evaluate_pairs(args)
    runs = [Run.load(directory) for directory in args.run_dirs]
    log = _read(args, args.log, schema_from_args(args, actions=False))
    results = {}
    embedded: dict[str, np.ndarray] = {}
    for run in runs:  # runs sharing an encoder share one encoding of the log
        key = json.dumps(None if args.embeddings or run.encoder is None else run.encoder.to_dict())
        if key not in embedded:
            embedded[key] = run_embeddings(run, log, args)
        name = run.name if run.name not in results else str(run.directory)
        results[name] = evaluate_run(run, log, embedded[key], resamples=args.resamples)
    rows = next(iter(results.values()))["rows"]
    explanation = (
        f"P(preferred) against the explicit labels of {rows:,} rows of {args.log}. Pairwise accuracy "
        "ranks pairs of responses to one prompt; length bias is the reward's rank correlation with "
        "log length minus the truth's (0: no more length-driven than quality)."
    )
    return _report_evaluation(args, results, EVALUATE_COLUMNS, 14, explanation)


def _evaluate_pairs(args: argparse.Namespace) -> int:
    pairs = read_pairs(
        args.pairs,
        prompt=args.prompt_col,
        chosen=args.chosen_col,
        rejected=args.rejected_col,
        on_error="skip" if args.skip_bad_rows else "raise",
        split=args.split,
        max_bad_fraction=args.max_bad_fraction,
    )
    if pairs.report.dropped:
        print(pairs.report.summary(), file=sys.stderr)
    results = {}
    for directory in args.run_dirs:
        run = Run.load(directory)
        name = run.name if run.name not in results else str(run.directory)
        results[name] = evaluate_pairs(run, pairs, args.cache_dir, resamples=args.resamples)
    explanation = (
        f"On {len(pairs):,} chosen/rejected pairs of {args.pairs}: accuracy is the share whose chosen "
        "response gets the higher reward (ties count as wrong, as in RewardBench); length bias is how "
        "much more often the reward prefers the longer response than the choosers did."
    )
    return _report_evaluation(args, results, PAIR_COLUMNS, 16, explanation)


def _report_evaluation(args: argparse.Namespace, results: dict, columns, width: int, explanation: str) -> int:
    """Print the metrics, their intervals and what they mean; write them as JSON when asked."""
    print(format_table(results, columns, width=width))
    _print_intervals(results, columns, args.resamples)
    print(f"\n{explanation}")
    if args.json:
        _write_json(args.json, results)
        say(args, f"Wrote {args.json}")
    return EXIT_OK


def _print_intervals(results: dict, columns, resamples: int) -> None:
    if not resamples:
        return
    intervals = {
        name: {key: f"[{low:.3f}, {high:.3f}]" for key, (low, high) in metrics.get("intervals", {}).items()}
        for name, metrics in results.items()
    }
    print(f"\n95% intervals ({resamples} bootstrap resamples of whole prompts or pairs):")
    print(format_table(intervals, columns, width=18))


def _report(args: argparse.Namespace) -> int:
    from pyro_irm.analysis.report import write_report

    run = Run.load(args.run_dir)
    source = args.log or run.info.get("log")
    if source is None:
        raise ValueError(f"{run.directory}/run.json names no log; give one with --log")
    log = read_log_from_args(args, source, run.schema)
    embeddings = run_embeddings(run, log, args)
    path = write_report(run, log, embeddings, args.out)
    print(f"Wrote {path}")
    return EXIT_OK


def _write_json(path: str, payload: dict) -> None:
    write_json_atomic(path, payload)


# ---------------------------------------------------------------- parser

_EPILOG = """\
typical path on real text:
  pyro-irm simulate --dataset ultrafeedback --sample train --out runs/train.jsonl
  pyro-irm embed runs/train.jsonl --out runs/train.npy
  pyro-irm fit runs/train.jsonl --embeddings runs/train.npy --method implicitrm --out runs/implicitrm
  pyro-irm evaluate runs/implicitrm --log runs/test.jsonl
  pyro-irm score runs/implicitrm new_rows.jsonl --out scores.jsonl

comparing every estimator on one data set (the papers' protocol, 5 seeds):
  pyro-irm benchmark --dataset ultrafeedback --sample

exit codes: 0 success, 2 bad input or usage (the message says which file, row and field), 130
interrupted, 1 an unexpected error (a bug; the traceback is printed).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-irm",
        description="Unbiased reward models from implicit user feedback (clicks, copies, upvotes): "
        "simulate or load a log, embed its text, fit ImplicitRM or a baseline, score and evaluate.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="simulate a biased log, fit ImplicitRM, naive and oracle, print their metrics",
        description="Simulate implicit feedback with strong propensity bias, fit ImplicitRM (the "
        "four-group model), the naive classifier (no action = negative) and the oracle (true "
        "labels), and compare them against the simulated truth.",
    )
    demo.add_argument("--rows", type=int, default=20_000, help="training rows (default 20000)")
    demo.add_argument("--test-rows", type=int, default=10_000, help="test rows (default 10000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the simulation and fits")
    demo.add_argument(
        "--inference",
        choices=("enumerate", "amortized", "fused"),
        default="enumerate",
        help="how ImplicitRM is fit (default: exact enumeration of the groups)",
    )
    demo.add_argument("--epochs", type=int, default=60, help="most epochs per fit (default 60)")
    demo.add_argument("--json", metavar="PATH", help="also write the metrics as JSON to PATH")
    add_quiet_option(demo)
    demo.set_defaults(handler=_demo)

    simulate = commands.add_parser(
        "simulate",
        help="make a semi-synthetic implicit-feedback log from a labelled preference data set",
        description="Read a preference data set with per-response quality scores, take the true "
        "preference from the score (METHOD.md thresholds), and simulate who acts. The log has "
        "prompt, response, action, label (the true preference) and the simulated truth.",
    )
    simulate.add_argument("--dataset", required=True, choices=sorted(PREFERENCE_SETS), help="data set format")
    simulate.add_argument(
        "--data-file", help="local file or saved directory in the data set's format (default: its hub copy)"
    )
    simulate.add_argument(
        "--sample",
        choices=("train", "eval"),
        help="the UltraFeedback sample bundled with pyro_irm (1,000 or 200 pairs; --dataset ultrafeedback)",
    )
    simulate.add_argument("--split", help="split to read (hub or saved directory)")
    simulate.add_argument("--limit", type=int, help="read only the first N source rows")
    simulate.add_argument("--out", required=True, help="output log (.jsonl, .csv, .tsv or .parquet)")
    simulate.add_argument("--config", help="TOML/JSON file with a [simulation] section")
    simulate.add_argument(
        "--skip-bad-rows", action="store_true", help="drop malformed rows and report them (default: stop)"
    )
    add_dataclass_options(
        simulate.add_argument_group("simulation (default propensity: the papers' alpha_power)"),
        SimulationConfig,
        "sim_",
        skip=(
            "num_rows",
            "embedding_dim",
            "positive_rate",
            "preference_sharpness",
            "reward_nonlinearity",
            "world_seed",
        ),
    )
    add_dataclass_options(
        simulate.add_argument_group("chat log (--setting chatlog)"),
        ChatLogConfig,
        "chat_",
        skip=("seed",),
        flag_prefix="chat_",
    )
    add_quiet_option(simulate)
    simulate.set_defaults(handler=_simulate)

    embed = commands.add_parser(
        "embed",
        help="encode a log's prompts and responses (cached on disk)",
        description="Encode every (prompt, response) row with a Hugging Face encoder into a .npy file. "
        "Rows already in the on-disk cache are not encoded again; an interrupted run resumes.",
    )
    embed.add_argument("log", help="log file, saved data set directory or hub name")
    embed.add_argument("--out", required=True, help="output .npy (metadata goes beside it as .json)")
    embed.add_argument("--no-cache", action="store_true", help="encode everything and keep no cache")
    add_schema_options(embed, actions=False, labels=False)
    _add_encoder_options(embed)
    add_quiet_option(embed)
    embed.set_defaults(handler=_embed)

    fit = commands.add_parser(
        "fit",
        help="fit a reward model to a log (implicitrm or any baseline)",
        description="Fit a model to a log's implicit actions (or, with --observed-col, an observational "
        "log's feedback) and write a run directory: the model, its configuration, metrics and the "
        "training plot. Settings come from flags, a --config file ([train], [model], [estimator], "
        "[encoder] sections), then the defaults.",
    )
    fit.add_argument("log", help="log file, saved data set directory or hub name")
    fit.add_argument("--out", required=True, help="run directory to write")
    fit.add_argument("--embeddings", help="precomputed embeddings of this log (from `pyro-irm embed`)")
    fit.add_argument("--config", help="TOML or JSON configuration file")
    fit.add_argument(
        "--bayesian-head",
        choices=HEAD_METHODS,
        help="after the fit, give the reward's last layer a posterior (per-row reward intervals): "
        "'laplace' (Gaussian at the fitted layer), 'svi' or 'nuts'",
    )
    add_dataclass_options(
        fit.add_argument_group("Bayesian head (--bayesian-head)"),
        HeadConfig,
        "head_",
        skip=("seed", "progress"),
        flag_prefix="head_",
    )
    add_schema_options(fit)
    add_dataclass_options(fit.add_argument_group("training"), TrainConfig, "train_", skip=("progress",))
    add_dataclass_options(fit.add_argument_group("model"), ModelConfig, "model_")
    add_dataclass_options(
        fit.add_argument_group("baseline estimators (propensity, class prior, flip rates)"),
        EstimatorConfig,
        "est_",
    )
    _add_encoder_options(fit)
    add_quiet_option(fit)
    fit.set_defaults(handler=_fit)

    add_benchmark_parser(commands)

    score = commands.add_parser(
        "score",
        help="reward new texts with a fitted model (JSONL or CSV out)",
        description="Encode (prompt, response) rows with the run's encoder and write each row's reward "
        "(a logit) and P(preferred). Without --out, JSON lines go to stdout.",
    )
    score.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    score.add_argument("input", help="rows to score: a file with prompt and response columns")
    score.add_argument("--out", help="output file (.jsonl, .csv, .tsv, .parquet)")
    score.add_argument("--embeddings", help="precomputed embeddings of the input")
    score.add_argument("--with-text", action="store_true", help="copy prompt and response into the output")
    score.add_argument(
        "--groups",
        action="store_true",
        help="also write each row's posterior probability of the four groups given its actions "
        "(implicitrm runs; the rows need the run's action, context and user columns)",
    )
    add_cache_option(score)
    add_schema_options(score, actions=False, labels=False)
    add_quiet_option(score)
    score.set_defaults(handler=_score)

    evaluate = commands.add_parser(
        "evaluate",
        help="compare fitted runs against a log's explicit labels",
        description="Metrics of each run's P(preferred) against the explicit labels of a log: AUC, "
        "MAE, RMSE, R^2, log-loss, ECE and pairwise accuracy within prompt.",
    )
    evaluate.add_argument("run_dirs", nargs="+", help="run directories written by `pyro-irm fit`")
    evaluate.add_argument("--log", help="log with explicit labels (e.g. a held-out split)")
    evaluate.add_argument(
        "--pairs",
        help="chosen/rejected preference pairs instead (TRL, UltraFeedback binarized, hh-rlhf): "
        "accuracy as RewardBench computes it",
    )
    evaluate.add_argument("--chosen-col", default="chosen", help="pairs: the chosen response's column")
    evaluate.add_argument("--rejected-col", default="rejected", help="pairs: the rejected response's column")
    evaluate.add_argument(
        "--resamples", type=int, default=200, help="bootstrap resamples for the 95%% intervals (0: none)"
    )
    evaluate.add_argument("--embeddings", help="precomputed embeddings of that log")
    evaluate.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")
    add_cache_option(evaluate)
    add_schema_options(evaluate, actions=False)
    add_quiet_option(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    report = commands.add_parser(
        "report",
        help="write a Markdown report of a run: fit, rewards, labels, posterior groups",
        description="Write RUN_DIR/report/report.md with PNGs: the training curve, the fit's figures, "
        "rewards by action, metrics against explicit labels, and, on a simulated log, the posterior "
        "groups against the truth (accuracy, confusion, reliability diagram).",
    )
    report.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    report.add_argument("--log", help="log to report on (default: the run's training log)")
    report.add_argument("--embeddings", help="precomputed embeddings of that log")
    report.add_argument("--out", help="output directory (default: RUN_DIR/report)")
    report.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows (default: stop)")
    add_bad_fraction_option(report)
    add_cache_option(report)
    add_quiet_option(report)
    report.set_defaults(handler=_report)
    add_rlhf_parsers(commands)
    return parser


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a command as Ctrl-C does (exit 130, after what can be saved is saved)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    previous = signal.getsignal(signal.SIGTERM)
    _interrupt_on_sigterm()
    if getattr(args, "quiet", False):
        # transformers and huggingface_hub read this when they load a model: no loading bars.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # A warning on the command line is a message to a user, not a pointer into our source. Only the
    # format changes: whoever records or filters warnings (a test, a caller) still sees them.
    previous_format, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"pyro-irm {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"pyro-irm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`pyro-irm score ... | head -1`): end quietly. Python would report the
        # broken pipe again when it flushes stdout at exit, so stdout now goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        warnings.formatwarning = previous_format
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
