"""Scheduler registry: built-in policies by name plus the ``clustersim.schedulers`` entry points.

An outside package adds a policy without touching clustersim by declaring, in
its own ``pyproject.toml``::

    [project.entry-points."clustersim.schedulers"]
    my_policy = "my_package.module:MyPolicy"

The entry point may name a :class:`~clustersim.schedulers.base.Scheduler`
subclass or a zero-argument factory returning one. Entry points are read
once, the first time a name is not found among the registered policies.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from clustersim.errors import ConfigError, UnknownNameError
from clustersim.schedulers.base import Scheduler

ENTRY_POINT_GROUP = "clustersim.schedulers"

SCHEDULERS: dict[str, type[Scheduler]] = {}
_entry_points_loaded = False

S = TypeVar("S", bound=type[Scheduler])


def register(name: str) -> Callable[[S], S]:
    """Class decorator: register a :class:`Scheduler` subclass as ``name``."""

    def deco(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
            raise TypeError(f"{cls!r} is not a Scheduler subclass")
        cls.name = name
        SCHEDULERS[name] = cls
        return cls

    return deco


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in SCHEDULERS:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # an outside package failed to import
            raise ConfigError(
                f"scheduler entry point '{ep.name}' ({ep.value}) failed to load: {exc}"
            ) from exc
        if isinstance(obj, type) and issubclass(obj, Scheduler):
            obj.name = ep.name
            SCHEDULERS[ep.name] = obj
        elif callable(obj):
            cls = type(obj())
            cls.name = ep.name
            SCHEDULERS[ep.name] = cls
        else:
            raise ConfigError(f"scheduler entry point '{ep.name}' is not a Scheduler")


def get_scheduler(name: str) -> type[Scheduler]:
    """The policy class registered as ``name`` (built-in or entry point)."""
    import clustersim.schedulers.policies  # (registers the built-ins)

    if name not in SCHEDULERS:  # the heterogeneous policies' module is big: only on demand
        import clustersim.schedulers.hetero_policies  # noqa: F401
    if name not in SCHEDULERS:
        _load_entry_points()
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise UnknownNameError("scheduler", name, SCHEDULERS) from None


def create_scheduler(name: str, params: dict[str, Any]) -> Scheduler:
    """Instantiate policy ``name`` with scenario ``params``; bad params name the policy."""
    cls = get_scheduler(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"scheduler.params for '{name}': {exc}") from None


def scheduler_names() -> list[str]:
    """All registered policy names (entry points included)."""
    import clustersim.schedulers.hetero_policies
    import clustersim.schedulers.policies  # noqa: F401

    _load_entry_points()
    return sorted(SCHEDULERS)
