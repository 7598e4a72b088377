"""Prints the unbiasedness study (default: 200 replicates of 2,000 rows), the SVI-against-NUTS
comparison of the Bayesian reward head, and the coverage of the heads' 90% intervals of the true
preference logit on fitted models, for BENCHMARKS.md.

    python benchmarks/posterior_checks.py [--replicates 200] [--out runs/posterior_checks]
    python benchmarks/posterior_checks.py --part coverage [--coverage-rows 2000 4000 8000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pyro_irm import SimulationConfig, TrainConfig, fit, simulate
from pyro_irm.analysis.convert import head_inference_data, summary
from pyro_irm.analysis.unbiasedness import UnbiasednessConfig, plot_unbiasedness, run_unbiasedness_study
from pyro_irm.inference.bayesian_head import (
    HeadConfig,
    compare_posteriors,
    fit_bayesian_head,
    fit_head_nuts,
    fit_head_svi,
)
from pyro_irm.models.head_posterior import seed_paper_likelihood


def head_problem(rows: int = 400, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, 3, generator=generator)
    logits = features @ torch.tensor([1.5, -1.0, 0.5]) + 0.3
    preference = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    propensity_logits = torch.randn(rows, generator=generator)
    acted = torch.bernoulli(torch.sigmoid(propensity_logits), generator=generator)
    return features, preference * acted, propensity_logits


def head_coverage(rows: int, seeds: int, methods=("network", "laplace")) -> dict[str, dict[str, float]]:
    """Fit the default simulation's world ``seeds`` times at ``rows`` rows (fused inference), give
    each fit every head of ``methods``, and measure on the training rows how often the 90% interval
    holds the true preference logit ``4 (score - t)`` and the point reward."""
    found: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for seed in range(seeds):
        data = simulate(SimulationConfig(num_rows=rows, seed=seed))
        truth = torch.logit(data.truth.preference_probability.clamp(1e-6, 1 - 1e-6))
        model = fit(data, TrainConfig(inference="fused", progress=False)).reward_model
        point = model.score(data.embeddings)
        for method in methods:
            started = time.perf_counter()
            model.head_posterior = fit_bayesian_head(
                model, data.embeddings, data.actions, data.context, method, HeadConfig(draws=1000, chains=1)
            )
            mean, low, high = model.reward_interval(data.embeddings)
            values = {
                "coverage": ((low <= truth) & (truth <= high)).float().mean().item(),
                "point_inside": ((low <= point) & (point <= high)).float().mean().item(),
                "mean_minus_point": (mean - point).abs().mean().item(),
                "width": (high - low).median().item(),
                "seconds": time.perf_counter() - started,
            }
            for key, value in values.items():
                found[method].setdefault(key, []).append(value)
        found.setdefault("fit", {}).setdefault("error", []).append((point - truth).abs().mean().item())
    return {
        m: {k: float(np.mean(v)) for k, v in found[m].items()}
        | {
            "coverage_sd": float(np.std(found[m]["coverage"])) if "coverage" in found[m] else 0.0,
            "coverage_min": float(np.min(found[m]["coverage"])) if "coverage" in found[m] else 0.0,
        }
        for m in found
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("all", "unbiasedness", "head", "coverage"), default="all")
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--coverage-rows", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--coverage-seeds", type=int, default=10)
    parser.add_argument("--out", default="runs/posterior_checks")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "coverage"):
        print(f"Coverage of the 90% intervals of the true preference logit, {args.coverage_seeds} worlds:")
        print("| rows | head | coverage (mean, sd, min) | holds the point | median width | head fit s |")
        print("|---:|---|---|---:|---:|---:|")
        for rows in args.coverage_rows:
            found = head_coverage(rows, args.coverage_seeds)
            for method in ("network", "laplace"):
                v = found[method]
                spread = f"{v['coverage']:.3f} ({v['coverage_sd']:.3f}, {v['coverage_min']:.3f})"
                print(
                    f"| {rows:,} | {method} | {spread} | {v['point_inside']:.3f} | {v['width']:.2f} "
                    f"| {v['seconds']:.2f} |"
                )
            error = found["fit"]["error"]
            print(f"  (the fitted reward's mean absolute error in logits at {rows:,} rows: {error:.2f})")
        if args.part == "coverage":
            return

    if args.part in ("all", "unbiasedness"):
        unbiasedness(args, out)
    if args.part in ("all", "head"):
        head_against_nuts()


def unbiasedness(args, out: Path) -> None:
    started = time.perf_counter()
    result = run_unbiasedness_study(UnbiasednessConfig(replicates=args.replicates, rows=args.rows))
    print(
        f"Unbiasedness: {args.replicates} replicates of {args.rows} rows, "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(f"true risk of the fixed reward model: {result.true_risk.mean():.4f} nats (mean over replicates)")
    print(result.format_table())
    plot_unbiasedness(result, out / "unbiasedness.png")


def head_against_nuts() -> None:
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
