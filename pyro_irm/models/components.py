"""Pluggable parts that save and load: a part is recorded by its class path (``module:Qualname``) and
its own settings, and rebuilt from them by importing the module, so a user's class from an
importable module (or one registered in this process) reloads at ``score``, ``serve``, ``export``
and ``report`` with nothing else to declare.

Loading never runs code the user did not name: a saved class path resolves only to a class
registered in this process, or in ``pyro_irm``, or in a module the user trusts (``--plugin``, an
installed ``pyro_irm.plugins`` entry point, :func:`trust_modules`, or a module whose part this
process saved), and only to a subclass of the base the part must have. Anything else is refused
before its module is imported, so a run directory is data, like a safetensors file.

A part's settings are its constructor's arguments, read back from attributes of the same names,
as scikit-learn's ``get_params`` does: keep each argument as an attribute, or define
``settings() -> dict``. Only JSON values are settings; tensors are state, saved with the weights.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

_JSON_SCALARS = (str, int, float, bool, type(None))

# Modules (with their submodules) whose classes a saved part may name.
_TRUSTED_MODULES: set[str] = {"pyro_irm"}


class UntrustedComponentError(ValueError):
    """A saved part names a class outside the modules the user trusts, or not of the expected base."""


def trust_modules(*names: str) -> None:
    """Let saved parts load classes from the modules ``names`` (and their submodules): what
    ``--plugin`` and the ``pyro_irm.plugins`` entry points do on the command line."""
    for name in names:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"trust_modules: {name!r} is not a module name")
        _TRUSTED_MODULES.add(name)


def trusted_modules() -> tuple[str, ...]:
    """The modules whose classes saved parts may name, sorted."""
    return tuple(sorted(_TRUSTED_MODULES))


def is_trusted_module(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _TRUSTED_MODULES)


def class_path(part: Any) -> str:
    """``'package.module:Qualname'`` of a part or a class: where :func:`load_class` finds it again."""
    cls = part if isinstance(part, type) else type(part)
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(
    path: str, registered: dict[str, type] | None = None, base: type | None = None, where: Any = None
) -> type:
    """The class at ``path`` (``module:Qualname``); a bare name is looked up in ``registered``
    (what older saves recorded). A module outside :func:`trusted_modules` is never imported, and
    a class that is not a subclass of ``base`` is never returned; ``where`` (the saved file) is
    named in the error.

    Raises:
        UntrustedComponentError: a class from a module nobody trusted, or not of ``base``.
        ValueError: naming the path, and what to import when its module is not importable.
    """
    origin = f"{where}: " if where is not None else ""
    if registered is not None and path in registered:
        return _of_base(registered[path], path, base, origin)
    if not isinstance(path, str) or ":" not in path:
        known = ", ".join(sorted(registered or ())) or "none"
        raise ValueError(
            f"{origin}component {path!r} is neither a class path (module:Class) nor registered ({known})"
        )
    module_name, _, qualname = path.partition(":")
    if not is_trusted_module(module_name):
        raise UntrustedComponentError(
            f"{origin}component {path} is in module {module_name!r}, which nobody trusted, so it was not "
            "imported; loading a saved model runs only pyro_irm's code and the modules you name. If "
            f"you wrote {module_name}, name it: --plugin {module_name} on the command line, or "
            f"pyro_irm.trust_modules({module_name!r}) in Python"
        )
    try:
        target: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"{origin}component {path}: its module {module_name!r} does not import ({error}); install or "
            "put it on the path (on the command line: --plugin MODULE), or register the class in this process"
        ) from None
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"{origin}component {path}: {module_name} has no {qualname}")
    if not isinstance(target, type):
        raise UntrustedComponentError(f"{origin}component {path} is not a class")
    return _of_base(target, path, base, origin)


def _of_base(cls: type, path: str, base: type | None, origin: str) -> type:
    if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise UntrustedComponentError(
            f"{origin}component {path} is not a {base.__module__}.{base.__qualname__}, so it is not built"
        )
    return cls


def _json_value(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list | tuple):
        return all(_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_value(item) for key, item in value.items())
    return False


def constructor_settings(part: Any, skip: tuple[str, ...] = (), own: bool = True) -> dict[str, Any]:
    """The part's ``settings()`` where it defines one (and ``own``), else its constructor's
    arguments (except ``skip``) read from its attributes of the same names; an argument with a
    default and no such attribute (or a non-JSON one: state) is left to its default.

    Raises:
        ValueError: an argument without a default that is not kept, or is not a JSON value.
    """
    if own and callable(getattr(part, "settings", None)):
        return dict(part.settings())
    settings = {}
    parameters = inspect.signature(type(part).__init__).parameters
    for name, parameter in list(parameters.items())[1:]:
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(part, name):
            if parameter.default is parameter.empty:
                raise ValueError(
                    f"{class_path(part)}: its argument {name!r} is not kept as an attribute, so a saved "
                    f"model cannot rebuild it; set self.{name} in __init__, or define settings()"
                )
            continue
        value = getattr(part, name)
        if not _json_value(value):
            if parameter.default is not parameter.empty:
                continue  # state rather than a setting (a tensor, a module): saved with the weights
            raise ValueError(
                f"{class_path(part)}: argument {name!r} = {type(value).__name__} is not a JSON value"
            )
        settings[name] = list(value) if isinstance(value, tuple) else value
    return settings


def findable_path(part: Any) -> str:
    """:func:`class_path`, refused where no import can find the class again. The part's module
    becomes trusted in this process: its code runs here already, so what this process saves, it
    may load again (another process must be told, with ``--plugin`` or :func:`trust_modules`).

    Raises:
        ValueError: for a class defined inside a function.
    """
    path = class_path(part)
    if "<locals>" in path:
        raise ValueError(
            f"{path}: a class defined inside a function cannot be found again when a saved model "
            "loads; define it at the top level of a module"
        )
    _TRUSTED_MODULES.add(path.partition(":")[0])
    return path


def describe(part: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"class": path, "settings": {...}}``: what :func:`rebuild` needs.

    Raises:
        ValueError: a class no import finds again, or settings that cannot be read back.
    """
    return {"class": findable_path(part), "settings": constructor_settings(part, skip)}


def rebuild(
    description: dict[str, Any],
    *args: Any,
    registered: dict[str, type] | None = None,
    base: type | None = None,
    where: Any = None,
) -> Any:
    """A fresh part from :func:`describe`'s record: ``cls(*args, **settings)``, with ``cls`` found
    as :func:`load_class` allows (a trusted module, a subclass of ``base``)."""
    cls = load_class(description["class"], registered, base=base, where=where)
    settings = description.get("settings") or {}
    if not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
        raise ValueError(f"{where}: component {description['class']}: its settings are not a JSON object")
    try:
        return cls(*args, **settings)
    except TypeError as error:
        raise ValueError(
            f"component {description['class']} does not rebuild from its saved settings {settings} ({error})"
        ) from None
