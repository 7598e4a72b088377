"""Prints the unbiasedness study (default: 200 replicates of 2,000 rows) and the SVI-against-NUTS
comparison of the Bayesian reward head, for BENCHMARKS.md.

    python benchmarks/posterior_checks.py [--replicates 200] [--out runs/posterior_checks]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pyro_irm.analysis.convert import head_inference_data, summary
from pyro_irm.analysis.unbiasedness import UnbiasednessConfig, plot_unbiasedness, run_unbiasedness_study
from pyro_irm.inference.bayesian_head import HeadConfig, compare_posteriors, fit_head_nuts, fit_head_svi
from pyro_irm.models.bayesian_head import seed_paper_likelihood


def head_problem(rows: int = 400, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, 3, generator=generator)
    logits = features @ torch.tensor([1.5, -1.0, 0.5]) + 0.3
    preference = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    propensity_logits = torch.randn(rows, generator=generator)
    acted = torch.bernoulli(torch.sigmoid(propensity_logits), generator=generator)
    return features, preference * acted, propensity_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--out", default="runs/posterior_checks")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    result = run_unbiasedness_study(UnbiasednessConfig(replicates=args.replicates, rows=args.rows))
    print(
        f"Unbiasedness: {args.replicates} replicates of {args.rows} rows, "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(f"true risk of the fixed reward model: {result.true_risk.mean():.4f} nats (mean over replicates)")
    print(result.format_table())
    plot_unbiasedness(result, out / "unbiasedness.png")

    features, actions, propensity_logits = head_problem()
    config = HeadConfig()
    started = time.perf_counter()
    likelihood = seed_paper_likelihood(actions, propensity_logits)
    nuts = fit_head_nuts(features, likelihood, config=config)
    nuts_seconds = time.perf_counter() - started
    started = time.perf_counter()
    svi = fit_head_svi(features, likelihood, config=config)
    svi_seconds = time.perf_counter() - started
    print(f"Bayesian head, 400 rows, 3 features + bias: NUTS {nuts_seconds:.1f} s, SVI {svi_seconds:.1f} s")
    print("| parameter | NUTS mean | NUTS sd | SVI mean | SVI sd |")
    print("|---|---:|---:|---:|---:|")
    names = ["weight[0]", "weight[1]", "weight[2]", "bias"]
    for name, nm, ns, sm, ss in zip(
        names, nuts.means(), nuts.standard_deviations(), svi.means(), svi.standard_deviations(), strict=True
    ):
        print(f"| {name} | {nm:+.3f} | {ns:.3f} | {sm:+.3f} | {ss:.3f} |")
    print(compare_posteriors(nuts, svi))
    print(summary(head_inference_data(nuts))[["mean", "sd", "ess_bulk", "ess_tail", "r_hat"]].to_string())


if __name__ == "__main__":
    main()
