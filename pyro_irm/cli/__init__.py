"""The ``pyro-irm`` command line (:mod:`pyro_irm.cli.app`), one module per command."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {"pyro_irm.cli.app": ("build_parser", "main")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
