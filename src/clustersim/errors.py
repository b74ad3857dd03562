"""Exception types of clustersim.

Every error a user can cause carries the place it came from (file, line, field,
policy, job) so the message alone says what to fix. All derive from
:class:`ClusterSimError`, which the CLI turns into one clear line and exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class ClusterSimError(Exception):
    """Base class of every error clustersim raises on purpose."""


class ConfigError(ClusterSimError):
    """A scenario, sweep or topology file is malformed or inconsistent."""


class TraceError(ClusterSimError):
    """A trace file has a bad row or column.

    The message names ``file:line``, the field and how to fix it.
    """

    def __init__(
        self, path: str, line: int | None, field: str | None, problem: str, fix: str = ""
    ) -> None:
        where = f"{path}:{line}" if line is not None else path
        what = f" field '{field}'" if field else ""
        text = f"{where}:{what} {problem}"
        if fix:
            text += f" ({fix})"
        super().__init__(text)
        self.path, self.line, self.field, self.problem, self.fix = path, line, field, problem, fix


class TopologyError(ConfigError):
    """A topology is impossible (unknown element, zero bandwidth, domain larger than parent)."""


class UnknownNameError(ClusterSimError, KeyError):
    """A name (device, scheduler, placement, format) is not in its registry."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        hint = get_close_matches(name, known, n=1, cutoff=0.5)
        text = f"unknown {kind} '{name}'"
        text += f"; did you mean '{hint[0]}'?" if hint else ""
        text += f" Known: {', '.join(known)}"
        super().__init__(text)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SchedulerError(ClusterSimError):
    """A scheduling policy returned an action the engine cannot carry out."""

    def __init__(
        self,
        policy: str,
        problem: str,
        job: str | None = None,
        devices: Iterable[int] | None = None,
        time: float | None = None,
    ) -> None:
        parts = [f"scheduler '{policy}'"]
        if time is not None:
            parts.append(f"at t={time:.3f}s")
        if job is not None:
            parts.append(f"job '{job}'")
        if devices is not None:
            devs = list(devices)
            shown = ", ".join(map(str, devs[:16])) + (", ..." if len(devs) > 16 else "")
            parts.append(f"devices [{shown}]")
        super().__init__(" ".join(parts) + ": " + problem)
        self.policy, self.problem, self.job = policy, problem, job


class SimulationError(ClusterSimError):
    """The engine found a broken invariant (a bug in clustersim, not in the input)."""
