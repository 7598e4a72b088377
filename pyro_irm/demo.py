"""The main job on built-in simulated data: ImplicitRM against the naive classifier (and the oracle).

Simulates a log with strong propensity bias, fits each method on the same rows, and evaluates on
fresh rows from the same simulated world. The fitting stack loads when the demo runs, so the command
line reads :class:`DemoConfig` without loading torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from pyro_irm.data.config import SimulationConfig
from pyro_irm.estimators import get_estimator
from pyro_irm.inference.config import Inference, TrainConfig

logger = logging.getLogger(__name__)

DEMO_METHODS = ("implicitrm", "naive", "oracle")
REWARD_METRICS = ("auc", "mae", "rmse", "log_loss", "ece")


@dataclass(frozen=True)
class DemoConfig:
    """Size and settings of the demo. The help text of each field is reused by the command line."""

    train_rows: int = field(default=20_000, metadata={"help": "training rows"})
    test_rows: int = field(default=10_000, metadata={"help": "test rows"})
    seed: int = field(default=0, metadata={"help": "seed of the simulation and fits"})
    inference: Inference = field(
        default="enumerate", metadata={"help": "how ImplicitRM is fit (exact enumeration of the groups)"}
    )
    max_epochs: int = field(default=60, metadata={"help": "most epochs per fit"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    simulation: SimulationConfig = field(
        default=SimulationConfig(), metadata={"help": "the simulated world (strong propensity bias)"}
    )


def run_demo(config: DemoConfig | None = None) -> dict[str, dict[str, float]]:
    """Fit each of ``DEMO_METHODS`` and return ``{method: {metric: value}}`` on the test rows."""
    from pyro_irm.analysis.metrics import evaluate
    from pyro_irm.data.simulation import simulate
    from pyro_irm.inference.svi import fit

    config = config or DemoConfig()
    world = replace(config.simulation, world_seed=config.seed)
    train = simulate(replace(world, num_rows=config.train_rows, seed=2 * config.seed))
    test = simulate(replace(world, num_rows=config.test_rows, seed=2 * config.seed + 1))
    results = {}
    for method in DEMO_METHODS:
        train_config = TrainConfig(
            method=method,
            inference=config.inference,
            max_epochs=config.max_epochs,
            seed=config.seed,
            progress=config.progress,
        )
        result = fit(train, train_config)
        metrics = evaluate(result.reward_model, test)
        if get_estimator(method).needs_truth:  # trained on the truth, it models no groups: only f counts
            metrics = {k: v for k, v in metrics.items() if k in REWARD_METRICS}
        metrics["epochs"] = result.history.epochs
        results[method] = metrics
        logger.info("%s: %s", method, metrics)
    return results
