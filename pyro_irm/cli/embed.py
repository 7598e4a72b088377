"""``pyro-irm embed``: a log's rows encoded into a ``.npy`` file, through the on-disk cache."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pyro_irm.cli.common import EXIT_OK, add_cache_option, refuse_overwriting_inputs
from pyro_irm.cli.options import add_dataclass_options, bounded, build_config, dataclass_values
from pyro_irm.cli.schema import add_schema_options, read_log_from_args, schema_from_args
from pyro_irm.encoders.config import EncoderConfig


def add_encoder_options(
    parser: argparse.ArgumentParser, title: str = "encoder (used when --embeddings is not given)"
) -> None:
    group = parser.add_argument_group(title)
    add_dataclass_options(
        group, EncoderConfig, "encoder_", rename={"model": "encoder"}, flag_prefix="encoder_"
    )
    add_cache_option(group)


def encoder_config(args: argparse.Namespace, file_config: dict | None = None) -> EncoderConfig:
    section = (file_config or {}).get("encoder")
    return build_config(
        EncoderConfig, section, dataclass_values(args, EncoderConfig, "encoder_"), "[encoder]"
    )


def add_parser(commands: argparse._SubParsersAction, parents: list) -> None:
    parser = commands.add_parser(
        "embed",
        parents=parents,
        help="encode a log's prompts and responses (cached on disk)",
        description="Encode every (prompt, response) row with a Hugging Face encoder into a .npy file. "
        "Rows already in the on-disk cache are not encoded again; an interrupted run resumes.",
    )
    parser.add_argument("log", help="log file, saved data set directory or hub name")
    parser.add_argument(
        "--out", metavar="PATH", required=True, help="output .npy (metadata goes beside it as .json)"
    )
    parser.add_argument("--no-cache", action="store_true", help="encode everything and keep no cache")
    parser.add_argument(
        "--devices",
        type=bounded(int, 1),
        default=1,
        metavar="N",
        help="encode in N processes on Lightning Fabric (one GPU each on CUDA, CPU processes otherwise), "
        "each its share of the batches one process would form, into the one cache; the output equals "
        "a one-process run (default: 1)",
    )
    add_schema_options(parser, actions=False, labels=False)
    add_encoder_options(parser, "encoder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pyro_irm.encoders.cache import rows_fingerprint
    from pyro_irm.encoders.embed import save_embeddings, sidecar_path
    from pyro_irm.runs import check_encoder_reading, embed_log

    if not str(args.out).endswith(".npy"):
        raise ValueError(f"--out {args.out}: embeddings are written as a .npy file; name it {args.out}.npy")
    refuse_overwriting_inputs(
        {"--out": args.out, "--out's metadata file": sidecar_path(Path(args.out))}, {"log": args.log}
    )
    log = read_log_from_args(args, args.log, schema_from_args(args, actions=False, labels=False))
    config = encoder_config(args)
    started = time.perf_counter()
    if args.devices < 1:
        raise ValueError(f"--devices must be at least 1, got {args.devices}")
    if args.devices > 1:
        if args.no_cache:
            raise ValueError("--devices N writes every process's rows into the shared cache; drop --no-cache")
        if not _encode_shards(args, log, config):
            return EXIT_OK  # not the first process: it has done its share
    embeddings, encoder = embed_log(
        log, config, args.cache_dir, use_cache=not args.no_cache, progress=not args.quiet
    )
    check_encoder_reading(embeddings, encoder.config)
    metadata = {
        "encoder": encoder.config.to_dict(),
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


def _encode_shards(args: argparse.Namespace, log, config: EncoderConfig) -> bool:
    """Encode this process's share of the missing rows into the cache; True in the first process,
    which then reads every row back. The other processes re-run this command (Fabric's launch)."""
    from dataclasses import replace

    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    from pyro_irm.device import die_with_parent, resolve_device
    from pyro_irm.encoders.cache import default_cache_root
    from pyro_irm.encoders.embed import Shard, embed_rows, open_cache
    from pyro_irm.encoders.encoder import TextEncoder

    cuda = resolve_device(config.device).type == "cuda"
    strategy = DDPStrategy(process_group_backend="nccl" if cuda else "gloo")
    fabric = Fabric(accelerator="cuda" if cuda else "cpu", devices=args.devices, strategy=strategy)
    fabric.launch()
    if fabric.global_rank != 0:
        die_with_parent()  # never an orphan when the first process is killed
    device = str(fabric.device) if cuda else config.device
    encoder = TextEncoder(replace(config, device=device))
    cache = open_cache(encoder, args.cache_dir or default_cache_root())
    shard = Shard(fabric.global_rank, fabric.world_size, fabric.barrier)
    embed_rows(
        log.encoder_prompts,
        log.responses,
        encoder,
        cache,
        progress=not args.quiet and shard.rank == 0,
        shard=shard,
    )
    return fabric.global_rank == 0
