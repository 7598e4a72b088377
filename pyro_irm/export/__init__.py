"""The reward model out of the toolkit: a ``transformers`` directory RLHF code loads."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.export.hf": (
        "EXPORT_FILE",
        "export_hf",
        "reward_stats",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
