"""The reward model out of the toolkit: a ``transformers`` directory RLHF code loads."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.export.hf": (
        "export_hf",
        "reward_stats",
    ),
    "pyro_irm.export.layout": ("EXPORT_FILE", "EXPORT_FORMATS"),
    "pyro_irm.export.stock": ("choose_pad_token", "export_stock", "stock_export_problems"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
