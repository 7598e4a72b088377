"""``pyro-irm export``: a run's reward model as a ``transformers`` model directory."""

from __future__ import annotations

import argparse

from pyro_irm.cli.common import EXIT_OK, say


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "export",
        parents=parents,
        help="write a run's reward model as a transformers model directory",
        description="Write the encoder, its pooling and the reward head as a directory that "
        "transformers.AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True) "
        "loads without pyro_irm (num_labels=1, the tokenizer beside it, safetensors weights); its "
        "config keeps the reward's mean and std over the training rows. The run must be fit from text.",
    )
    parser.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    parser.add_argument(
        "--out", required=True, help="directory to write (an earlier export there is replaced)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.runs import Run

    run = Run.load(args.run_dir)
    out = run.export_hf(args.out)
    say(
        args,
        f"Wrote {out}: load it with AutoModelForSequenceClassification.from_pretrained("
        "DIR, trust_remote_code=True)",
    )
    return EXIT_OK
