"""Placement policies: which devices a job gets, given the cluster's occupancy.

Each policy is a function ``(job, state) -> tuple[int, ...] | None`` registered
by name; ``None`` means the job does not fit now. All are deterministic.

Rules shared by every policy:

* Only nodes of the job's ``device_type`` are used (any node when it is None).
* **Whole-device jobs** take fully free devices; within a node the
  lowest-numbered free devices are taken first.
* **Fractional jobs** (``gpu_milli`` < 1000, openb-style sharing) are
  best-fit on device share: among partly used devices with at least
  ``gpu_milli`` free, the one with the least free share (lowest device id on
  ties); failing that, a fully free device chosen by the policy's node rule
  for a 1-device job. A fractional job asking for several devices takes each
  of them this way.

Node rules (whole-device jobs, ``k`` devices):

``first_fit``
    Walk nodes in id order and take free devices until ``k`` are collected
    (a job may span nodes).
``pack``
    Fewest nodes: if some node has >= ``k`` free devices, use the one with
    the fewest free devices that still fits (best fit; lowest id on ties);
    otherwise take the node with the most free devices (lowest id on ties)
    whole and repeat for the rest.
``spread``
    Round robin over nodes: each round takes one device from every node that
    still has free devices, visiting them by decreasing free count (lowest id
    on ties), until ``k`` devices are collected, so the job spans as many
    nodes as possible.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from clustersim.errors import UnknownNameError
from clustersim.state import FULL, ClusterState, NodeIndex
from clustersim.workload.job import Job

Placement = Callable[[Job, ClusterState], tuple[int, ...] | None]
_NodeRule = Callable[[NodeIndex, ClusterState, int], list[int] | None]

PLACEMENTS: dict[str, Placement] = {}


def register_placement(name: str) -> Callable[[Placement], Placement]:
    """Decorator: register a placement function under ``name``."""

    def deco(fn: Placement) -> Placement:
        PLACEMENTS[name] = fn
        return fn

    return deco


def get_placement(name: str) -> Placement:
    """The placement policy registered as ``name``."""
    try:
        return PLACEMENTS[name]
    except KeyError:
        raise UnknownNameError("placement policy", name, PLACEMENTS) from None


def _first_fit_nodes(idx: NodeIndex, state: ClusterState, k: int) -> list[int] | None:
    out: list[int] = []
    pos = 0
    while len(out) < k:
        pos = idx.first_with(1, pos)
        if pos < 0:
            return None
        node = idx.nodes[pos]
        free = state.free_devices[node]
        out.extend(free[: k - len(out)])
        pos += 1
    return out


def _pack_nodes(idx: NodeIndex, state: ClusterState, k: int) -> list[int] | None:
    out: list[int] = []
    taken: list[tuple[int, int]] = []
    need = k
    try:
        while need > 0:
            pos = idx.best_fit(need)
            if pos >= 0:
                out.extend(state.free_devices[idx.nodes[pos]][:need])
                return out
            if idx.max_free == 0:
                return None
            pos = idx.argmax()
            f = idx.free[pos]
            out.extend(state.free_devices[idx.nodes[pos]])
            need -= f
            taken.append((pos, f))
            idx.set_free(idx.nodes[pos], 0)  # hide it while choosing the rest
        return out
    finally:
        for pos, f in reversed(taken):
            idx.set_free(idx.nodes[pos], f)


def _spread_nodes(idx: NodeIndex, state: ClusterState, k: int) -> list[int] | None:
    out: list[int] = []
    original: dict[int, int] = {}  # position -> free count before this placement
    left: dict[int, int] = {}  # position -> free count after the devices taken so far
    try:
        while len(out) < k:
            if idx.max_free == 0:  # round over: every node with devices left is eligible again
                again = [(p, c) for p, c in left.items() if c > 0]
                if not again:
                    return None
                for p, c in again:
                    idx.set_free(idx.nodes[p], c)
                continue
            pos = idx.argmax()
            f = idx.free[pos]
            before = original.setdefault(pos, f)
            out.append(state.free_devices[idx.nodes[pos]][before - f])
            left[pos] = f - 1
            idx.set_free(idx.nodes[pos], 0)  # one device per node per round
        return out
    finally:
        for pos, f in original.items():
            idx.set_free(idx.nodes[pos], f)


def _shared(
    job: Job, idx: NodeIndex, state: ClusterState, rule: _NodeRule
) -> tuple[int, ...] | None:
    out: list[int] = []
    chosen: set[int] = set()
    partial = idx.partial
    i = bisect_left(partial, (job.gpu_milli, -1))
    while len(out) < job.num_gpus and i < len(partial):
        d = partial[i][1]
        if d not in chosen:
            out.append(d)
            chosen.add(d)
        i += 1
    if len(out) < job.num_gpus:
        more = rule(idx, state, job.num_gpus - len(out))
        if more is None:
            return None
        out.extend(more)
    return tuple(out)


def _make(rule: _NodeRule) -> Placement:
    def place(job: Job, state: ClusterState) -> tuple[int, ...] | None:
        idx = state.index_for(job.device_type)
        if idx is None:
            return None
        if job.gpu_milli < FULL:
            return _shared(job, idx, state, rule)
        k = job.num_gpus
        if k > state.free_total or k > idx.total:
            return None
        devs = rule(idx, state, k)
        return tuple(devs) if devs is not None else None

    place.__doc__ = rule.__doc__
    return place


first_fit = register_placement("first_fit")(_make(_first_fit_nodes))
pack = register_placement("pack")(_make(_pack_nodes))
spread = register_placement("spread")(_make(_spread_nodes))
from clustersim.schedulers import share_placement as _share  # noqa: E402,F401
from clustersim.schedulers import topo_placement as _topo  # noqa: E402,F401
