"""The reward model out of the toolkit: a ``transformers`` directory RLHF code loads."""

from pyro_irm.export.hf import EXPORT_FILE, export_hf, reward_stats

__all__ = ["EXPORT_FILE", "export_hf", "reward_stats"]
