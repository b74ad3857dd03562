"""Topology fragmentation metrics: stranded devices per level and the allocation ratio.

This module owns measuring how badly free capacity is scattered across the
topology's domains, from a :class:`~clustersim.state.ClusterState` snapshot
(whole devices; a partly used shared device is not free):

* :func:`stranded_by_level` -- for each level (node, supernode, rack, pod, ...)
  the free devices sitting in groups that are *partly used* (some device
  allocated or down) and too empty to host the *typical job* there. A group
  of capacity ``cap`` hosts the typical job of ``k`` devices at that level when
  it has ``min(k, cap)`` free devices: a whole job if it fits in the group,
  else the group's full share of it. So with ``k = 16`` on 8-device nodes, a
  node with 5 free devices strands 5 at the node level (it cannot give a whole
  node to the job), and a 4-node rack with 10 free strands 10 at the rack level;
* :func:`allocation_ratio` -- allocated milli-devices over capacity;
* :func:`typical_size` -- the typical job size of a workload (most frequent
  whole-device request);
* :func:`stranded_timeline` -- replay a finished non-preemptive run's job
  records into a fresh state and sample both metrics at given times.

Cost: O(N x levels) numpy work per snapshot for N nodes, meant for periodic
sampling, not per event.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clustersim.errors import ConfigError
from clustersim.state import FULL, ClusterState
from clustersim.topology import Cluster
from clustersim.workload.job import Job

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _node_arrays(state: ClusterState, device_type: str | None) -> tuple[IntArray, IntArray]:
    """(free, capacity) per node, zero for nodes of other device types."""
    c = state.cluster
    free = np.asarray(state.node_free, dtype=np.int64)
    cap = np.asarray(c.node_size, dtype=np.int64)
    if device_type is not None:
        keep = np.asarray([t == device_type for t in c.node_type], dtype=bool)
        free = np.where(keep, free, 0)
        cap = np.where(keep, cap, 0)
    return free, cap


def stranded_by_level(
    state: ClusterState, typical: int, device_type: str | None = None
) -> dict[str, int]:
    """Stranded free devices per level name for a typical job of ``typical`` devices.

    A level-``l`` group with ``cap`` devices and ``free`` fully free ones
    strands its ``free`` devices when ``0 < free < cap`` (partly used) and
    ``free < min(typical, cap)`` (cannot host its share of the typical job).
    Only nodes of ``device_type`` count when it is given.
    """
    if typical < 1:
        raise ConfigError(f"typical job size must be >= 1, got {typical}")
    free, cap = _node_arrays(state, device_type)
    c = state.cluster
    out: dict[str, int] = {}
    for lv, groups in zip(c.levels, c.group_of, strict=True):
        if lv.nodes == 1:
            f, k = free, cap
        else:
            f = np.bincount(groups, weights=free).astype(np.int64)
            k = np.bincount(groups, weights=cap).astype(np.int64)
        need = np.minimum(typical, k)
        mask = (f > 0) & (f < k) & (f < need)
        out[lv.name] = int(f[mask].sum())
    return out


def allocation_ratio(state: ClusterState) -> float:
    """Allocated milli-devices over capacity (fractional shares count), in [0, 1]."""
    return state.used_milli_total / (FULL * state.cluster.num_devices)


def typical_size(jobs: Iterable[Job]) -> int:
    """Most frequent whole-device request size among ``jobs`` (the smaller on ties; 1 if none)."""
    counts = Counter(j.num_gpus for j in jobs if j.gpu_milli >= FULL)
    if not counts:
        return 1
    best = max(counts.values())
    return min(k for k, v in counts.items() if v == best)


@dataclass(frozen=True)
class StrandedTimeline:
    """Samples of :func:`stranded_timeline`: ``stranded[name][i]`` at ``times[i]``."""

    times: FloatArray
    stranded: dict[str, IntArray]
    allocation: FloatArray
    free: IntArray

    def time_average(
        self, start: float | None = None, end: float | None = None
    ) -> dict[str, float]:
        """Time-weighted mean of each level's stranded count between ``start`` and ``end``.

        The samples are step values (each holds until the next sample).
        """
        t = self.times
        if len(t) == 0:
            return {k: 0.0 for k in self.stranded}
        lo = t[0] if start is None else start
        hi = t[-1] if end is None else end
        edges = np.clip(np.append(t, hi), lo, hi)
        w = np.diff(edges)
        total = float(w.sum())
        out: dict[str, float] = {}
        for k, v in self.stranded.items():
            out[k] = float((v * w).sum() / total) if total > 0 else float(v[-1])
        return out


def stranded_timeline(
    cluster: Cluster,
    records: Sequence[Any],
    typical: int,
    times: Sequence[float] | None = None,
    device_type: str | None = None,
) -> StrandedTimeline:
    """Replay finished job records (start, end, devices) and sample the metrics.

    ``records`` are engine :class:`~clustersim.schedulers.base.JobRecord` s (or
    any objects with ``first_start``, ``end``, ``devices``, ``preemptions`` and
    ``job``) of a run without preemption. Samples are taken after all events
    at each time in ``times`` (default: every start or end instant).
    Raises :class:`ConfigError` for a preempted job (its devices changed over
    the run and the records keep only the last set).
    """
    events: list[tuple[float, int, Any]] = []
    for r in records:
        if getattr(r, "preemptions", 0):
            raise ConfigError(
                f"job '{r.job.id}' was preempted; stranded_timeline needs a run without preemption"
            )
        s, e = float(r.first_start), float(r.end)
        if math.isnan(s) or not r.devices:
            continue
        events.append((s, 1, r))
        if not math.isnan(e):
            events.append((e, 0, r))
    events.sort(key=lambda x: (x[0], x[1]))
    if times is None:
        times = sorted({e[0] for e in events})
    state = ClusterState(cluster)
    names = [lv.name for lv in cluster.levels]
    out_t: list[float] = []
    out_s: dict[str, list[int]] = {n: [] for n in names}
    out_a: list[float] = []
    out_f: list[int] = []
    i = 0
    for t in sorted(times):
        while i < len(events) and events[i][0] <= t:
            _, kind, r = events[i]
            milli = int(r.job.gpu_milli)
            if kind == 1:
                state.allocate(tuple(r.devices), milli)
            else:
                state.release(tuple(r.devices), milli)
            i += 1
        snap = stranded_by_level(state, typical, device_type)
        out_t.append(float(t))
        for n in names:
            out_s[n].append(snap[n])
        out_a.append(allocation_ratio(state))
        out_f.append(state.free_total)
    return StrandedTimeline(
        np.asarray(out_t, dtype=np.float64),
        {n: np.asarray(v, dtype=np.int64) for n, v in out_s.items()},
        np.asarray(out_a, dtype=np.float64),
        np.asarray(out_f, dtype=np.int64),
    )
