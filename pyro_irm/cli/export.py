"""``pyro-irm export``: a run's reward model as a ``transformers`` model directory."""

from __future__ import annotations

import argparse
import json

from pyro_irm.cli.common import EXIT_OK, add_run_trust_option, load_run, refuse_overwriting_inputs, say
from pyro_irm.export.layout import EXPORT_FILE, EXPORT_FORMATS


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "export",
        parents=parents,
        help="write a run's reward model as a transformers model directory",
        description="Write the encoder and the reward head as a directory that "
        "transformers.AutoModelForSequenceClassification.from_pretrained(DIR) loads without pyro_irm "
        "(num_labels=1, the tokenizer beside it, safetensors weights); its config keeps the reward's "
        "mean and std over the training rows. A linear head (fit --reward-head linear) over a "
        "decoder's last-token state is written as the backbone's own *ForSequenceClassification class, "
        "which TRL, OpenRLHF and vLLM load as it is; anything else needs trust_remote_code=True. "
        "The run must be fit from text.",
    )
    parser.add_argument("run_dir", help="run directory written by `pyro-irm fit`")
    parser.add_argument(
        "--out",
        metavar="PATH",
        required=True,
        help="directory to write (an earlier export there is replaced)",
    )
    parser.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="auto",
        help="'stock': the backbone's own *ForSequenceClassification class with the head in its score "
        "layer, no remote code (refused, with the reasons, where it cannot hold); 'remote-code': pyro_irm's "
        "own model class, for any head and pooling; 'auto': stock where it holds (default: auto)",
    )
    add_run_trust_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    refuse_overwriting_inputs({"--out": args.out}, {"run directory": args.run_dir}, directories=True)
    run = load_run(args, args.run_dir)
    out = run.export_hf(args.out, format=args.format)
    description = json.loads((out / EXPORT_FILE).read_text())
    if description["format"] == "stock":
        how = f"a stock {description['class']}: AutoModelForSequenceClassification.from_pretrained(DIR)"
    else:
        how = "AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)"
    say(args, f"Wrote {out}: load it as {how}")
    return EXIT_OK
