"""``pyro-irm demo``: the main job on built-in simulated data."""

from __future__ import annotations

import argparse
import time

from pyro_irm.cli.common import EXIT_OK, say, write_json
from pyro_irm.cli.options import add_dataclass_options, build_config, dataclass_values
from pyro_irm.demo import DemoConfig

COLUMNS = (
    ("auc", "AUC"),
    ("mae", "MAE"),
    ("ece", "ECE"),
    ("group_accuracy", "group acc."),
    ("no_action_group_accuracy", "no-action group acc."),
)


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "demo",
        parents=parents,
        help="simulate a biased log, fit ImplicitRM, naive and oracle, print their metrics",
        description="Simulate implicit feedback with strong propensity bias, fit ImplicitRM (the "
        "four-group model), the naive classifier (no action = negative) and the oracle (true "
        "labels), and compare them against the simulated truth.",
    )
    add_dataclass_options(
        parser,
        DemoConfig,
        "demo_",
        skip=("progress", "simulation"),
        rename={"train_rows": "rows", "max_epochs": "epochs"},
    )
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON to PATH")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.demo import run_demo
    from pyro_irm.tables import markdown_table

    values = dataclass_values(args, DemoConfig, "demo_")
    config = build_config(DemoConfig, None, {**values, "progress": not args.quiet}, "demo")
    say(
        args,
        f"Simulating {config.train_rows:,} training and {config.test_rows:,} test rows with strong "
        "propensity bias (a response feature and the display position drive who acts).",
    )
    started = time.perf_counter()
    results = run_demo(config)
    rows = ((method, *(metrics.get(key) for key, _ in COLUMNS)) for method, metrics in results.items())
    print(markdown_table(("method", *(title for _, title in COLUMNS)), rows))
    prior = results["implicitrm"]["no_action_prior_accuracy"]
    print(
        f"Metrics against the simulated truth on the test rows. On no-action rows, naming the most "
        f"frequent group would be right {prior:.3f} of the time. "
        f"Finished in {time.perf_counter() - started:.0f} s."
    )
    write_json(args, results)
    return EXIT_OK
