"""
Build objects from settings trees, without needing Django.

A settings tree is made of dicts, lists and plain values. Any dict with an
``"ENGINE"`` key is an object specification::

    {"ENGINE": "dotted.path.to.Class", "OPTIONS": {"keyword": "argument", ...}}

and is replaced by ``Class(**OPTIONS)``. Specifications may appear anywhere, including
inside the OPTIONS of another specification (e.g. a ``RoutingBackend``'s backends and
processors), which are built before the object that receives them.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from eventtracking.processors.exceptions import ImproperlyConfigured

ENGINE_KEY = "ENGINE"
OPTIONS_KEY = "OPTIONS"


def load(tree: Any) -> Any:
    """
    Return a copy of `tree` in which every ENGINE specification is instantiated.

    Dicts and lists (tuples too, returned as lists) are walked recursively; other
    values are returned unchanged. Keys other than ENGINE and OPTIONS in a
    specification are ignored, as in the original package.

    Raises ``ImproperlyConfigured`` (a ``ValueError``) naming the ENGINE string if it
    cannot be imported or OPTIONS is not a dict. Exceptions raised by a constructor
    itself (e.g. ``TypeError`` for a bad option) propagate unchanged.
    """
    if isinstance(tree, Mapping):
        if ENGINE_KEY in tree:
            return instantiate(tree)
        return {key: load(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [load(item) for item in tree]
    return tree


def instantiate(spec: Mapping[str, Any]) -> Any:
    """Build one object from a ``{"ENGINE": ..., "OPTIONS": {...}}`` specification."""
    engine = spec[ENGINE_KEY]
    # Resolve the class before building the options so a typo fails fast, before any
    # nested backend (which may start threads or open connections) is constructed.
    cls = import_engine(engine)
    options = spec.get(OPTIONS_KEY) or {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"OPTIONS of ENGINE {engine!r} must be a dict, got {type(options).__name__}"
        )
    kwargs = {key: load(value) for key, value in options.items()}
    return cls(**kwargs)


# The optional dependencies of this package's backends, by top-level module: the extra to install.
_EXTRAS = {
    "celery": "celery",
    "kombu": "celery",
    "openedx_events": "eventbus",
    "edx_toggles": "eventbus",
    "pymongo": "mongodb",
    "bson": "mongodb",
    "django": "django",
}


def _hint(error: Exception) -> str:
    """What to do about a module that could not be imported, when this package knows."""
    missing = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not missing:
        return ""
    top = missing.partition(".")[0]
    if top in _EXTRAS:
        return f" (install this package's extra for it: pip install 'event-tracking[{_EXTRAS[top]}]')"
    if top == "eventtracking":
        return (
            f" ({missing} is not part of this package: docs/compatibility.rst says what it has of Open edX's"
            " event-tracking)"
        )
    return ""


def import_engine(engine: Any) -> Any:
    """
    Import and return the callable named by the dotted path `engine`.

    Raises ``ImproperlyConfigured("Cannot load ENGINE '<engine>': <reason>")``; when the reason
    is a missing optional dependency, the message names the extra that installs it, and a module
    of ``eventtracking`` that this package does not have is said to be so.
    """
    if not isinstance(engine, str) or not engine:
        raise ImproperlyConfigured(f"Cannot load ENGINE {engine!r}: it must be a dotted path string")
    module_name, _, attribute = engine.rpartition(".")
    if not module_name or not attribute:
        raise ImproperlyConfigured(f"Cannot load ENGINE {engine!r}: expected 'package.module.ClassName'")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as error:
        # Includes errors from the module's own imports (e.g. an optional dependency), and
        # TypeError/ValueError for malformed relative names such as "..Foo".
        raise ImproperlyConfigured(f"Cannot load ENGINE {engine!r}: {error}{_hint(error)}") from error
    try:
        target = getattr(module, attribute)
    except AttributeError as error:
        raise ImproperlyConfigured(
            f"Cannot load ENGINE {engine!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from error
    if not callable(target):
        raise ImproperlyConfigured(f"Cannot load ENGINE {engine!r}: {attribute!r} is not callable")
    return target
