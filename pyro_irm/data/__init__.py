"""Data: the feedback container, its validation, and the simulator with ground truth."""

from pyro_irm.data.feedback import FeedbackData, GroundTruth, split_indices
from pyro_irm.data.simulate import SimulationConfig, simulate, simulate_from_scores

__all__ = [
    "FeedbackData",
    "GroundTruth",
    "SimulationConfig",
    "simulate",
    "simulate_from_scores",
    "split_indices",
]
