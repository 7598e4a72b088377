"""``pyro-irm simulate``: a semi-synthetic log from a data set with quality scores."""

from __future__ import annotations

import argparse
from dataclasses import replace

from pyro_irm.cli.common import EXIT_OK, say
from pyro_irm.cli.options import (
    add_dataclass_options,
    bounded,
    build_config,
    dataclass_values,
    read_config_file,
)
from pyro_irm.data.config import ChatLogConfig, SimulationConfig
from pyro_irm.data.preference_formats import PREFERENCE_SETS

# What a semi-synthetic log takes from its data set rather than from the simulation.
_FROM_THE_DATA = (
    "num_rows",
    "embedding_dim",
    "positive_rate",
    "preference_sharpness",
    "reward_nonlinearity",
    "world_seed",
)


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "simulate",
        parents=parents,
        help="make a semi-synthetic implicit-feedback log from a labelled preference data set",
        description="Read a preference data set with per-response quality scores, take the true "
        "preference from the score (docs/method.md thresholds), and simulate who acts. The log has "
        "prompt, response, action, label (the true preference) and the simulated truth.",
    )
    parser.add_argument("--dataset", required=True, choices=sorted(PREFERENCE_SETS), help="data set format")
    parser.add_argument(
        "--data-file",
        metavar="FILE",
        help="local file or saved directory in the data set's format (default: its hub copy)",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="--dataset ultrafeedback: the sample bundled with pyro_irm (--split train: 1,000 pairs, the "
        "default; --split eval: 200 pairs), as `benchmark --sample` reads it",
    )
    parser.add_argument(
        "--split", metavar="NAME", help="split to read (hub, saved directory, or the sample: train or eval)"
    )
    parser.add_argument(
        "--limit", metavar="N", type=bounded(int, 1), help="read only the first N source rows"
    )
    parser.add_argument(
        "--out", metavar="PATH", required=True, help="output log (.jsonl, .csv, .tsv or .parquet)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML/JSON file with [simulation] and [chatlog] sections"
    )
    parser.add_argument(
        "--skip-bad-rows", action="store_true", help="drop malformed rows and report them (default: stop)"
    )
    add_dataclass_options(
        parser.add_argument_group("simulation (default propensity: the papers' alpha_power)"),
        SimulationConfig,
        "sim_",
        skip=_FROM_THE_DATA,
        defaults=replace(SimulationConfig(), propensity_form="alpha_power"),
    )
    add_dataclass_options(
        parser.add_argument_group("chat log (--setting chatlog)"),
        ChatLogConfig,
        "chat_",
        skip=("seed",),
        flag_prefix="chat_",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pyro_irm.data.chatlog_simulation import chatlog_records
    from pyro_irm.data.logs import write_records
    from pyro_irm.data.preference_sets import load_preference_set, simulate_log
    from pyro_irm.data.samples import ultrafeedback_sample

    file_config = read_config_file(args.config, ("simulation", "chatlog")) if args.config else {}
    overrides = dataclass_values(args, SimulationConfig, "sim_")
    overrides.setdefault("propensity_form", "alpha_power")
    config = build_config(SimulationConfig, file_config.get("simulation"), overrides, "[simulation]")
    data_file = args.data_file
    split = args.split
    if args.sample:
        if args.dataset != "ultrafeedback" or data_file is not None:
            raise ValueError(
                "--sample is the bundled UltraFeedback sample: use it with --dataset ultrafeedback alone"
            )
        data_file, split = ultrafeedback_sample(split or "train"), None
    scored = load_preference_set(
        args.dataset,
        data_file,
        split=split,
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
