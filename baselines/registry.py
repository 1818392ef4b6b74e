"""The registry of training methods: the joint EBM variants (:mod:`ebm.minmin`) and every baseline.

Method names are part of the CLI. Each name maps to ``"module:attribute"`` and the module is
imported only when the method is first asked for, so importing the registry is cheap. An error
raised while importing a method's module propagates (a broken module must not be hidden).

The attribute may be a :class:`~ebm.method.Method` instance, a ``Method`` subclass
(instantiated without arguments) or a zero-argument factory returning a ``Method``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ebm import unknown_name_error
from ebm.method import Method

#: name → "module:attribute", in the order methods are listed.
_BUILTIN: dict[str, str] = {
    "minmin-logistic": "ebm.minmin:MINMIN_LOGISTIC",
    "minmin-logistic-is": "ebm.minmin:MINMIN_LOGISTIC_IS",
    "minmin-sparsemax": "ebm.minmin:MINMIN_SPARSEMAX",
    "minmin-entmax15": "ebm.minmin:MINMIN_ENTMAX15",
    "minmin-finite": "ebm.minmin:MINMIN_FINITE",
    "minmin-scalar": "ebm.minmin:MINMIN_SCALAR",
    "exact-mle": "baselines.exact:ExactMLE",
    "exact-sparsemax": "baselines.exact:ExactSparsemax",
    "bce": "baselines.bce:BCE",
    "mcmc-pcd": "baselines.mcmc:PersistentContrastiveDivergence",
    "mcmc-gwg": "baselines.gwg:GibbsWithGradients",
    "perceptron": "baselines.perceptron:Perceptron",
    "minmax-reinforce": "baselines.minmax:MinMaxReinforce",
    "nce": "baselines.nce:RankingNCE",
    "constant": "baselines.constant:Constant",
}

_loaded: dict[str, Method] = {}
_extra: dict[str, Method] = {}


def _instantiate(name: str, target: Any) -> Method:
    if isinstance(target, Method):
        method = target
    elif callable(target):  # a Method subclass or a factory
        method = target()
    else:
        raise TypeError(f"registry entry {name!r} is neither a Method, a Method subclass nor a factory: {target!r}")
    if not isinstance(method, Method):
        raise TypeError(f"registry entry {name!r} produced {type(method).__name__}, not a Method")
    if method.name != name:
        raise ValueError(f"registry entry {name!r} resolves to a method named {method.name!r}")
    return method


def _resolve(name: str, spec: str) -> Method:
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise ImportError(f"method {name!r}: module {module_name!r} has no attribute {attribute!r}")
    return _instantiate(name, getattr(module, attribute))


def _names() -> list[str]:
    return list(_BUILTIN) + [n for n in _extra if n not in _BUILTIN]


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add a method (an instance) under ``method.name``; refuses to shadow an existing name
    unless ``replace`` is True. Returns the method so it can be used as a decorator target."""
    if not isinstance(method, Method):
        raise TypeError(f"register_method expects a Method instance, got {type(method).__name__}")
    if not replace and (method.name in _BUILTIN or method.name in _extra):
        raise ValueError(f"a method named {method.name!r} is already registered")
    _extra[method.name] = method
    _loaded.pop(method.name, None)
    return method


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method` (tests use this to clean up)."""
    _extra.pop(name, None)
    _loaded.pop(name, None)


def get_method(name: str) -> Method:
    """The method called ``name``; unknown names raise ``ValueError`` with close matches."""
    if name in _extra:
        return _extra[name]
    if name in _loaded:
        return _loaded[name]
    if name not in _BUILTIN:
        raise unknown_name_error("method", name, _names())
    _loaded[name] = _resolve(name, _BUILTIN[name])
    return _loaded[name]


def list_methods() -> list[Method]:
    """Every registered method, in registry order."""
    return [get_method(name) for name in _names()]


def method_names() -> list[str]:
    """All registered names, whether or not their modules import (for CLI choices and hints)."""
    return _names()
