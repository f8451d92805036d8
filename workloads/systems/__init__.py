"""Serving systems behind a registry: one module per system, each a ``ServingSystem``.

Adding a system is one new module that subclasses ``ServingSystem`` and decorates it with
``@register_system``; config validation, the engine, the closed form and the reports pick
it up from here.
"""

from __future__ import annotations

import difflib

from workloads.errors import WorkloadError
from workloads.models import ModelSpec
from workloads.systems.base import ServingSystem
from workloads.systems.ops import StepOp

_REGISTRY: dict[str, ServingSystem] = {}


def register_system(cls: type[ServingSystem]) -> type[ServingSystem]:
    """Class decorator: make ``cls`` available under ``cls.name`` (names are unique)."""
    if not cls.name:
        raise WorkloadError(f"{cls.__name__}: a serving system needs a name")
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise WorkloadError(f"system {cls.name!r} is registered already "
                            f"({type(_REGISTRY[cls.name]).__name__})")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister_system(name: str) -> None:
    """Remove a registered system (tests that register a toy one clean up with this)."""
    _REGISTRY.pop(name, None)


def available_systems() -> list[str]:
    """Registered system names, in registration order (the shipped four first)."""
    return list(_REGISTRY)


def get_system(name: str) -> ServingSystem:
    """The registered system called ``name``; a clear error naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        near = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise WorkloadError(f"system: unknown system {name!r}{hint}; known: "
                            f"{', '.join(_REGISTRY)}") from None


def decode_step_ops(model: ModelSpec, system: str, precision: str, batch: int,
                    unique_tokens: int, shared_tokens: int, **kw: object) -> list[StepOp]:
    """``get_system(system).decode_ops(...)``: the ops of one decode step of one layer."""
    return get_system(system).decode_ops(model, precision, batch, unique_tokens, shared_tokens,
                                         **kw)  # type: ignore[arg-type]


def prefill_ops(model: ModelSpec, system: str, precision: str, tokens: int, shared_tokens: int,
                **kw: object) -> list[StepOp]:
    """``get_system(system).prefill_ops(...)``: one layer of prefilling ``tokens`` tokens."""
    return get_system(system).prefill_ops(model, precision, tokens, shared_tokens,
                                          **kw)  # type: ignore[arg-type]


def _register_shipped() -> None:
    from workloads.systems.moska import Moska
    from workloads.systems.moska_colocated import MoskaColocated
    from workloads.systems.prefix_cache import PrefixCache
    from workloads.systems.shared_gemm import SharedGemm
    from workloads.systems.vanilla import Vanilla

    for cls in (Vanilla, PrefixCache, SharedGemm, Moska, MoskaColocated):
        register_system(cls)


_register_shipped()

__all__ = [
    "ServingSystem",
    "StepOp",
    "available_systems",
    "decode_step_ops",
    "get_system",
    "prefill_ops",
    "register_system",
    "unregister_system",
]
