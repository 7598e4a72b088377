"""How each way of fitting ImplicitRM converges on the demo's simulated log.

Fits every inference mode on the same 20k training rows and prints held-out ELBO, epochs, and AUC and
MAE of the reward against the true preference on 10k fresh rows.

    python benchmarks/guide_gradients.py [--rows 20000] [--max-epochs 60]
"""

from __future__ import annotations

import argparse

from pyro_irm import SimulationConfig, TrainConfig, evaluate, fit, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--max-epochs", type=int, default=60)
    args = parser.parse_args()
    train = simulate(SimulationConfig(num_rows=args.rows, seed=0))
    test = simulate(SimulationConfig(num_rows=10_000, seed=1))
    runs = [
        ("naive", dict(method="naive")),
        ("enumerate (TraceEnum_ELBO)", dict(inference="enumerate")),
        ("fused (closed form)", dict(inference="fused")),
        ("amortized, guide enumerated", dict(inference="amortized")),
        ("amortized, score function", dict(inference="amortized", guide_gradient="score_function")),
        ("oracle", dict(method="oracle")),
    ]
    print(f"{'fit':<30}{'epochs':>8}{'held-out ELBO':>15}{'AUC':>8}{'MAE':>8}{'no-action group acc.':>22}")
    for name, overrides in runs:
        result = fit(train, TrainConfig(max_epochs=args.max_epochs, progress=False, **overrides))
        metrics = evaluate(result.reward_model, test)
        elbo = result.history.validation_score[result.history.best_epoch]
        print(
            f"{name:<30}{result.history.epochs:>8}{elbo:>15.4f}{metrics['auc']:>8.3f}"
            f"{metrics['mae']:>8.3f}{metrics['no_action_group_accuracy']:>22.3f}"
        )


if __name__ == "__main__":
    main()
