"""``pyro-irm benchmark``: every estimator on one data set under the papers' protocol."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from pyro_irm.benchmark.config import (
    DATASETS,
    ONE_CHANNEL_VARIANTS,
    PROTOCOL_TRAINING,
    SWEEPABLE,
    BenchmarkConfig,
    ChatLogBenchmarkConfig,
    TreeBenchmarkConfig,
    default_simulation,
)
from pyro_irm.cli.common import EXIT_OK, add_estimator_options, estimator_config, write_json
from pyro_irm.cli.embed import add_encoder_options, encoder_config
from pyro_irm.cli.options import (
    add_dataclass_options,
    bounded,
    build_config,
    dataclass_values,
    read_config_file,
)
from pyro_irm.cli.schema import add_schema_options, read_log_from_args, schema_from_args
from pyro_irm.data.config import SimulationConfig
from pyro_irm.estimators import METHOD_NAMES
from pyro_irm.inference.config import TrainConfig
from pyro_irm.models.config import ModelConfig

# What the protocol sets per fit or per seed, or takes from the data set: not options.
_TRAIN_SET_PER_FIT = ("method", "seed", "progress", "checkpoint_dir", "fit_labels")
_SIMULATION_OPTIONS = ("propensity_form", "alpha", "feature_strength", "preference_bias")
_SIMULATION_OPTIONS += ("observation_rate", "eps0", "eps1")


def _methods(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    names = tuple(name for value in values for name in value.split(",") if name)
    if names == ("all",):
        return METHOD_NAMES
    return names


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """``'alpha=0.5,0.2,0.05'`` -> ``('alpha', [0.5, 0.2, 0.05])``."""
    name, sep, values = text.partition("=")
    if not sep or name not in SWEEPABLE:
        raise ValueError(
            f"--sweep {text!r}: expected PARAM=V1,V2,... with PARAM one of {', '.join(SWEEPABLE)}"
        )
    try:
        return name, [float(v) for v in values.split(",") if v]
    except ValueError:
        raise ValueError(f"--sweep {text!r}: the values must be numbers") from None


def benchmark_config(args: argparse.Namespace, file_config: dict) -> BenchmarkConfig:
    """The protocol from the options, over a config file's ``[benchmark]`` section (with
    ``[benchmark.train]`` and ``[benchmark.simulation]`` tables), over the defaults."""
    section = dict(file_config.get("benchmark") or {})
    train_section, simulation_section = section.pop("train", {}), section.pop("simulation", {})
    values = dataclass_values(args, BenchmarkConfig, "bench_")
    if "methods" in values:
        values["methods"] = _methods(values["methods"])
    setting = values.get("setting", section.get("setting", "implicit"))
    train_values = dataclass_values(args, TrainConfig, "train_")
    train = _nested(TrainConfig, PROTOCOL_TRAINING, train_section, train_values)
    simulation = _nested(
        SimulationConfig,
        default_simulation("chatlog" if setting == "one-channel-context" else setting),
        simulation_section,
        dataclass_values(args, SimulationConfig, "sim_"),
    )
    return build_config(
        BenchmarkConfig, section, {**values, "train": train, "simulation": simulation}, "[benchmark]"
    )


def _nested(cls, default, section: dict, overrides: dict):
    """``default`` with a config-file table and then the command line's values replaced."""
    known = {f for f in default.__dataclass_fields__}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"[benchmark]: unknown {cls.__name__} setting(s) {unknown}")
    return replace(default, **{**section, **overrides})


def _benchmark(args: argparse.Namespace) -> int:
    file_config = (
        read_config_file(args.config, ("benchmark", "model", "estimator", "encoder", "chatlog", "trees"))
        if args.config
        else {}
    )
    config = benchmark_config(args, file_config)
    model_config = build_config(ModelConfig, file_config.get("model"), {}, "[model]")
    encoder = encoder_config(args, file_config)
    sweep = parse_sweep(args.sweep) if args.sweep else None  # a bad --sweep stops before any encoding
    started = time.perf_counter()
    if args.log is not None:
        return _benchmark_log(args, config, file_config, model_config, encoder, started)
    if args.dataset == "oasst":
        return _benchmark_trees(args, file_config, model_config, encoder, started)
    if args.dataset is None:
        raise ValueError("give --dataset (a built-in data set) or --log (your own log with labels)")
    data = _embedded_set(args, encoder)
    if not args.quiet:
        print(f"{data.description}. Embedded in {time.perf_counter() - started:.0f} s.", file=sys.stderr)
    if config.setting in ("chatlog", "one-channel-context"):
        return _benchmark_chatlog(args, data, config, file_config, model_config, started)
    estimators = estimator_config(args, file_config)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if sweep is not None:
        table, payload = _sweep(args, sweep, data, config, model_config, estimators, out)
    else:
        table, payload = _compare(args, data, config, model_config, estimators, out)
    print(table)
    write_json(args, payload)
    if not args.quiet:
        where = f" Wrote {out}." if out is not None else ""
        print(f"Finished in {time.perf_counter() - started:.0f} s.{where}", file=sys.stderr)
    return EXIT_OK


def _embedded_set(args, encoder):
    """The data set the options name, embedded (the bundled UltraFeedback sample with --sample)."""
    from pyro_irm.benchmark import load_embedded_set
    from pyro_irm.data.samples import ultrafeedback_sample

    data_file, test_file = args.data_file, args.test_file
    if args.sample:
        if args.dataset != "ultrafeedback" or data_file or test_file:
            raise ValueError(
                "--sample is the bundled UltraFeedback sample: use it with --dataset ultrafeedback alone"
            )
        data_file, test_file = ultrafeedback_sample("train"), ultrafeedback_sample("eval")
    return load_embedded_set(
        args.dataset,
        data_file,
        test_file,
        encoder,
        args.cache_dir or "default",
        args.limit,
        num_rows=args.num_rows,
        progress=not args.quiet,
    )


def _benchmark_chatlog(args, data, config, file_config, model_config, started) -> int:
    from pyro_irm.benchmark.chatlog import run_chatlog_benchmark

    chat_config = _chat_config(args, file_config, config.seeds)
    one_channel = config.setting == "one-channel-context"
    if one_channel and getattr(args, "chatbench_variants", None) is None:
        chat_config = replace(chat_config, variants=ONE_CHANNEL_VARIANTS)
    result = run_chatlog_benchmark(
        data, chat_config, model_config=model_config, progress=not args.quiet, one_channel_context=one_channel
    )
    _write_chatlog_result(args, result, started)
    return EXIT_OK


def _compare(args, data, config, model_config, estimators, out) -> tuple[str, dict]:
    """Every method once per seed: the table, and what --json writes."""
    from pyro_irm.atomic import write_json_atomic, write_text_atomic
    from pyro_irm.benchmark import format_table, plot_benchmark, run_benchmark

    result = run_benchmark(data, config, model_config, estimators, not args.quiet)
    table = format_table(result)
    if out is not None:
        write_text_atomic(out / "table.md", table)
        write_json_atomic(out / "results.json", result.to_dict())
        plot_benchmark(result, out / "benchmark.png")
    return table, result.summary


def _sweep(args, sweep, data, config, model_config, estimators, out) -> tuple[str, dict]:
    """The comparison at each value of one setting: the tables, and what --json writes."""
    from pyro_irm.atomic import write_json_atomic, write_text_atomic
    from pyro_irm.benchmark import format_table, plot_sweep, run_sweep, sweep_table

    parameter, points = sweep
    results = run_sweep(data, parameter, points, config, model_config, estimators, not args.quiet)
    tables = [f"## {parameter} = {value:g}\n\n{format_table(results[value])}" for value in sorted(results)]
    table = f"AUC against {parameter}:\n\n{sweep_table(results, parameter, 'auc')}\n" + "\n".join(tables)
    payload = {str(value): results[value].summary for value in sorted(results)}
    full = {"parameter": parameter, "results": {str(v): r.to_dict() for v, r in sorted(results.items())}}
    if out is not None:
        write_text_atomic(out / "sweep.md", table)
        write_json_atomic(out / "results.json", full)
        plot_sweep(results, parameter, out / "sweep_auc.png", "auc")
        plot_sweep(results, parameter, out / "sweep_mae.png", "mae")
    return table, payload


def _chat_config(args, file_config: dict, seeds: int) -> ChatLogBenchmarkConfig:
    values = dataclass_values(args, ChatLogBenchmarkConfig, "chatbench_")
    if "variants" in values:
        values["variants"] = _methods(values["variants"])
    return build_config(
        ChatLogBenchmarkConfig, file_config.get("chatlog"), {**values, "seeds": seeds}, "[chatlog]"
    )


def _benchmark_log(args, config, file_config, model_config, encoder, started) -> int:
    """The variants on the user's own log: fit on the log, scored on its held-out labelled rows."""
    import numpy as np

    from pyro_irm.benchmark.chatlog import run_log_benchmark
    from pyro_irm.runs import embeddings_for

    schema = schema_from_args(args)
    log = read_log_from_args(args, args.log, schema)
    embeddings, _ = embeddings_for(log, args.embeddings, encoder, args.cache_dir, not args.quiet)
    data = log.to_feedback(embeddings)
    log_length = np.log1p([len(r) for r in log.responses])
    result = run_log_benchmark(
        data,
        log_length,
        _chat_config(args, file_config, config.seeds),
        model_config,
        args.evaluation_fraction,
        description=str(args.log),
        progress=not args.quiet,
    )
    _write_chatlog_result(args, result, started)
    return EXIT_OK


def _benchmark_trees(args, file_config, model_config, encoder, started) -> int:
    """The real-reaction benchmark on OpenAssistant trees (the bundled sample unless --data-file)."""
    from pyro_irm.atomic import write_json_atomic, write_text_atomic
    from pyro_irm.benchmark.trees import format_tree_table, run_tree_benchmark
    from pyro_irm.data.samples import oasst_sample
    from pyro_irm.runs import embeddings_for

    source = args.data_file or oasst_sample()
    schema = replace(schema_from_args(args), log_format="oasst")
    log = read_log_from_args(args, source, schema)
    embeddings, _ = embeddings_for(log, args.embeddings, encoder, args.cache_dir, not args.quiet, vary=True)
    values = dataclass_values(args, TreeBenchmarkConfig, "trees_")
    config = build_config(TreeBenchmarkConfig, file_config.get("trees"), values, "[trees]")
    result = run_tree_benchmark(
        log, embeddings, config, model_config, description=str(source), progress=not args.quiet
    )
    table = format_tree_table(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "table.md", table)
        write_json_atomic(out / "results.json", result.to_dict())
    print(f"{result.description}\n\n{table}")
    write_json(args, result.metrics)
    if not args.quiet:
        print(f"Finished in {time.perf_counter() - started:.0f} s.", file=sys.stderr)
    return EXIT_OK


def _write_chatlog_result(args, result, started: float) -> None:
    from pyro_irm.atomic import write_json_atomic, write_text_atomic
    from pyro_irm.benchmark.chatlog import format_chatlog_table

    table = format_chatlog_table(result)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "table.md", table)
        full = {"description": result.description, "per_seed": result.per_seed, "summary": result.summary}
        write_json_atomic(out / "results.json", full)
    print(f"{result.description}\n\n{table}")
    write_json(args, result.summary)
    if not args.quiet:
        print(f"Finished in {time.perf_counter() - started:.0f} s.", file=sys.stderr)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """Which data: a built-in data set (its files, a sample, a limit) or the user's own log."""
    parser.add_argument(
        "--dataset",
        choices=(*DATASETS, "oasst"),
        help="data set (or --log); 'oasst': real reactions on OpenAssistant trees, scored against "
        "sibling ranks (the bundled sample, or --data-file)",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="your own log with explicit labels on some rows: fit the chat-log variants on it and "
        "score them on the labelled rows of held-out prompts (map its columns with the log options)",
    )
    parser.add_argument(
        "--embeddings", metavar="FILE", help="--log: precomputed embeddings of its rows (pyro-irm embed)"
    )
    parser.add_argument(
        "--evaluation-fraction",
        metavar="RATE",
        type=bounded(float, 0, 1, open_low=True),
        default=0.5,
        help="--log: share of prompts whose labelled rows are held out to evaluate (default: 0.5)",
    )
    parser.add_argument(
        "--data-file",
        metavar="FILE",
        help="the data set's (train) file; default: its hub copy (oasst: the bundled sample)",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="--dataset ultrafeedback: the sample bundled with pyro_irm (1,000 train and 200 test pairs)",
    )
    parser.add_argument(
        "--test-file",
        metavar="FILE",
        help="its test split; without one, 20%% of the prompts are held out as the test split",
    )
    parser.add_argument(
        "--limit", metavar="N", type=bounded(int, 1), help="read only the first N records of each file"
    )
    parser.add_argument(
        "--num-rows", metavar="N", type=bounded(int, 2), default=20_000, help="synthetic only: training rows"
    )


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "benchmark",
        parents=parents,
        help="compare every estimator on one data set (the papers' semi-synthetic protocol)",
        description="Simulate feedback on a data set with true quality scores (by default the papers' "
        "setting: alpha-power propensity, alpha 0.5, observation rate 0.5), fit each method on the "
        "feedback alone over several seeds, and report MAE, RMSE, R^2, AUC, log-loss, ECE and "
        "pairwise accuracy within prompt against the clean test labels (mean ± std over seeds). "
        "Model selection uses only the feedback. With --sweep, repeat over values of one setting.",
    )
    _add_data_options(parser)
    parser.add_argument(
        "--sweep", metavar="PARAM=V1,V2,...", help=f"repeat over values of one of {', '.join(SWEEPABLE)}"
    )
    parser.add_argument(
        "--out", metavar="PATH", help="directory for table.md, results.json and the PNG chart(s)"
    )
    parser.add_argument("--json", metavar="PATH", help="write {method: {metric: {mean, std}}} as JSON")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML/JSON file with [benchmark], [model], [estimator], [encoder]"
    )
    add_dataclass_options(
        parser.add_argument_group("protocol"), BenchmarkConfig, "bench_", skip=("train", "simulation")
    )
    add_dataclass_options(
        parser.add_argument_group("training of every fit"),
        TrainConfig,
        "train_",
        skip=_TRAIN_SET_PER_FIT,
        defaults=PROTOCOL_TRAINING,
    )
    simulated = default_simulation()
    add_dataclass_options(
        parser.add_argument_group(
            "simulation (implicit defaults; observational: rate 0.2, eps0 0.1, eps1 0.2)"
        ),
        SimulationConfig,
        "sim_",
        skip=tuple(f for f in simulated.__dataclass_fields__ if f not in _SIMULATION_OPTIONS),
        defaults=simulated,
    )
    add_dataclass_options(
        parser.add_argument_group("chat log (--setting chatlog)"),
        ChatLogBenchmarkConfig,
        "chatbench_",
        skip=("seeds",),
        flag_prefix="chatlog_",
    )
    add_dataclass_options(
        parser.add_argument_group("real reactions (--dataset oasst)"),
        TreeBenchmarkConfig,
        "trees_",
        flag_prefix="trees_",
    )
    add_estimator_options(parser)
    add_encoder_options(parser)
    add_schema_options(parser)
    parser.set_defaults(handler=_benchmark)
