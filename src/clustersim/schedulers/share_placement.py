"""GPU-sharing placement policies (FGD and its baselines) for the event-driven engine.

This module owns six registered placement policies, ``(job, state) -> devices |
None`` like every policy of :mod:`clustersim.schedulers.placement`, that reuse the
node scoring and GPU selection of :mod:`clustersim.fragmentation` (Weng et al.,
USENIX ATC'23) unchanged -- each call is one ``choose(share_state, pod, rng,
tie_break)`` of that module:

=================  ==========================================
registered name    :mod:`clustersim.fragmentation` policy
=================  ==========================================
``fgd``            :func:`~clustersim.fragmentation.fgd`
``share_bestfit``  :func:`~clustersim.fragmentation.bestfit`
``dotproduct``     :func:`~clustersim.fragmentation.dotproduct`
``gpupacking``     :func:`~clustersim.fragmentation.gpupacking`
``gpuclustering``  :func:`~clustersim.fragmentation.gpuclustering`
``random_fit``     :func:`~clustersim.fragmentation.random`
=================  ==========================================

**Mirror.** The policies score a :class:`~clustersim.fragmentation.GpuShareState`
kept per :class:`~clustersim.state.ClusterState` instance (a
:class:`weakref.WeakKeyDictionary` keyed by the state; one mirror per policy
instance) and built on the policy's first call from ``state.used``. Node ``n``
of the cluster is mirror node ``n`` (name ``n`` zero-padded, so "lowest name" is
"lowest node id"), GPU ``g`` of it is device ``cluster.node_first[n] + g``, its
model is ``cluster.node_type[n]``. It stays current through
:attr:`ClusterState.usage_listeners` (every allocate/release: the touched nodes
are marked dirty and the GpuClustering class counts ``tags`` updated) and
:attr:`ClusterState.listeners` (failures/repairs: the node is marked dirty).
Before scoring, the dirty nodes' rows are re-read from ``state.used`` (a down
device has 0 free) and written with
:meth:`~clustersim.fragmentation.GpuShareState.set_gpu_free`. Per event this costs
O(k) for k touched devices; scoring itself is the vectorised O(N x G) of
:mod:`clustersim.fragmentation`. A job's GpuClustering class is share-gpu for
``gpu_milli`` < 1000, else its device count (8 for 8 or more), counted once on
every node it touches; a mirror built on a non-empty state starts with zero
class counts.

**GPU only.** The engine does not track CPU or memory and the cluster model has no
node CPU capacity (:func:`clustersim.topogen.openb_topology` keeps GPU nodes and
GPU counts only), so the mirror models GPU fragmentation alone: every node and
pod has CPU 0 and memory 0 (a job's ``attrs["cpu_milli"]`` is ignored), and the
typical mix has CPU 0 on every shape (:func:`~clustersim.fragmentation.gpu_only_mix`).
A pod is ``PodRequest(0, 0, job.num_gpus, job.gpu_milli, job.device_type or '')``.

**Typical mix (FGD).** ``make_fgd_placement(mix)`` scores against a fixed mix (its
CPU column is set to 0; its ``gpu_spec`` must use the cluster's device type
names, as :func:`mix_from_jobs` does). The registered ``fgd`` has no workload
access, so it builds the mix from the jobs it has seen: it records each distinct
job id it is asked to place (the current job included, before scoring) and,
whenever that count reaches a power of two (1, 2, 4, 8, ...), rebuilds the mix
with :func:`mix_from_jobs` over all of them (95 % coverage) and re-attaches it
(O(N x G x M)); so the mix is rebuilt O(log J) times for J jobs and is at most
a factor two behind the jobs seen.

**Tie-breaks and randomness.** Equal node scores go to the lowest node id
(``tie_break="name"``, the authors' rule); ``tie_break="random"`` draws with the
mirror's generator. ``random_fit`` draws with that generator too. The generator
is ``numpy.random.default_rng(seed)`` created with the mirror (``seed`` 0 for the
registered policies, ``make_share_placement(..., seed=s)`` for others), so a
run is reproducible; its draws follow the sequence of placement calls, including
calls whose answer the scheduler does not use.

**Jobs outside the pod model.** The fragmentation policies place a pod on one
node. A job that can never be one pod -- more devices than the largest node of
its device type, or a fractional share on several devices -- is placed by the
registered ``pack`` policy instead (the largest node counts over every type an
``A|B`` device type accepts). A job whose device type(s) the cluster lacks gets
None. A ``device_type`` ``A|B`` becomes the pod's ``gpu_spec`` unchanged, which
fragmentation.py reads as "any of A, B", as the engine does.

**No-fit memo.** When a policy finds no node for a job shape ``(num_gpus,
gpu_milli, device_type)`` it answers None for that shape without scoring until
capacity may have grown (any release, or a node's free count rising after a
repair). Allocations only shrink free shares, so feasibility is monotone between
such events and the memo never changes an answer; no random draw is skipped
(the policies draw only when some node is feasible).

Queue order is the scheduler's; these policies only choose devices for the job
they are asked about.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from clustersim.errors import UnknownNameError
from clustersim.fragmentation import (
    MILLI,
    N_TAGS,
    POLICIES,
    TIE_BREAKS,
    TYPICAL_COVERAGE,
    GpuShareState,
    PodRequest,
    Policy,
    TypicalMix,
    gpu_only_mix,
)
from clustersim.schedulers.placement import PLACEMENTS, Placement, register_placement
from clustersim.state import FULL, ClusterState
from clustersim.workload.job import Job

REGISTERED: dict[str, str] = {
    "fgd": "fgd",
    "share_bestfit": "bestfit",
    "dotproduct": "dotproduct",
    "gpupacking": "gpupacking",
    "gpuclustering": "gpuclustering",
    "random_fit": "random",
}
"""Registered placement name -> :data:`clustersim.fragmentation.POLICIES` name."""

DEFAULT_SEED = 0
"""Seed of the per-state generator of the registered policies."""


def mix_from_jobs(jobs: Iterable[Job], threshold: float = TYPICAL_COVERAGE) -> TypicalMix:
    """GPU-only typical mix of engine jobs: shapes ``(gpu_milli, num_gpus, device_type)``.

    :func:`~clustersim.fragmentation.gpu_only_mix` with ``device_type`` None as
    ``''`` (any model).
    """
    js = list(jobs)
    return gpu_only_mix(
        [j.num_gpus for j in js],
        [j.gpu_milli for j in js],
        [j.device_type or "" for j in js],
        threshold,
    )


def _no_cpu(mix: TypicalMix) -> TypicalMix:
    """``mix`` with CPU 0 on every shape (the mirror is GPU-only)."""
    if not mix.cpu_milli.any():
        return mix
    return replace(mix, cpu_milli=np.zeros(len(mix), dtype=np.int64))


class ShareMirror:
    """The :class:`GpuShareState` of one :class:`ClusterState`, kept current in O(k).

    It holds no reference to the state (the state owns it through its listeners),
    so a :class:`weakref.WeakKeyDictionary` keyed by the state can drop both.
    """

    def __init__(
        self,
        state: ClusterState,
        mix: TypicalMix | None,
        seed: int,
        lazy_mix: bool,
        threshold: float,
    ) -> None:
        c = state.cluster
        n = c.num_nodes
        width = len(str(max(n - 1, 0)))
        zeros = np.zeros(n, dtype=np.int64)
        self.node_of: list[int] = c.node_of.tolist()
        self.first: list[int] = list(c.node_first)
        self.size: list[int] = list(c.node_size)
        self.width = max(self.size)
        self.share = GpuShareState(
            [str(i).zfill(width) for i in range(n)], zeros, zeros, c.node_size, c.node_type, None
        )
        self.rng = np.random.default_rng(seed)
        self.lazy = lazy_mix
        self.threshold = threshold
        self.seen: dict[str, tuple[int, int, str]] = {}
        self.types: list[str] = list(c.node_type)
        self.max_size: dict[str | None, int] = {None: max(self.size)}
        """Largest node a job of this device type (or ``A|B`` set) may use."""
        self.dirty: set[int] = set(range(n)) if state.used_milli_total or state.down else set()
        self.node_free: list[int] = list(state.node_free)
        self.grow = 0
        """Bumped whenever capacity may have grown (a release, a repaired device)."""
        self.failed: dict[tuple[int, int, str | None], int] = {}
        """Job shape -> ``grow`` when the policy last found no node for it."""
        self.sync(state)
        if mix is not None:
            self.share.set_mix(_no_cpu(mix))
        state.usage_listeners.append(self.on_usage)
        state.listeners.append(self.on_node)

    def largest(self, device_type: str | None) -> int:
        """Largest node size among the nodes ``device_type`` (``None``, a type, ``A|B``) accepts."""
        got = self.max_size.get(device_type)
        if got is None:
            ok = set(device_type.split("|")) if device_type else set()
            got = max((n for n, t in zip(self.size, self.types, strict=True) if t in ok), default=0)
            self.max_size[device_type] = got
        return got

    # -- hooks (called by ClusterState)
    def on_usage(self, devices: Sequence[int], milli: int) -> None:
        """Mark the nodes of ``devices`` dirty and count the job's class on each once."""
        node_of, dirty = self.node_of, self.dirty
        nodes = {node_of[d] for d in devices}
        dirty.update(nodes)
        a = abs(milli)
        tag = 0 if a < FULL else min(len(devices), N_TAGS - 1)
        step = 1 if milli > 0 else -1
        if milli < 0:
            self.grow += 1
        tags = self.share.tags
        for nd in nodes:
            tags[nd, tag] += step

    def on_node(self, node: int, free: int) -> None:
        """A node's free count changed (also failures and repairs): mark it dirty."""
        self.dirty.add(node)
        if free > self.node_free[node]:
            self.grow += 1
        self.node_free[node] = free

    # -- sync
    def sync(self, state: ClusterState) -> None:
        """Re-read the dirty nodes from ``state`` into the mirror."""
        if not self.dirty:
            return
        nodes = sorted(self.dirty)
        self.dirty.clear()
        rows = np.zeros((len(nodes), self.share.gpu_free.shape[1]), dtype=np.int64)
        used, down = state.used, state.down
        for i, nd in enumerate(nodes):
            f = self.first[nd]
            row = rows[i]
            for g in range(self.size[nd]):
                d = f + g
                row[g] = 0 if (down and d in down) else MILLI - used[d]
        self.share.set_gpu_free(nodes, rows)

    def observe(self, job: Job) -> None:
        """Record ``job`` for the lazily built mix; rebuild it at powers of two."""
        if job.id in self.seen:
            return
        self.seen[job.id] = (job.num_gpus, job.gpu_milli, job.device_type or "")
        k = len(self.seen)
        if k & (k - 1) == 0:
            shapes = list(self.seen.values())
            mix = gpu_only_mix(
                [s[0] for s in shapes],
                [s[1] for s in shapes],
                [s[2] for s in shapes],
                self.threshold,
            )
            self.share.set_mix(mix)


_MIRRORS: weakref.WeakKeyDictionary[ClusterState, dict[int, ShareMirror]] = (
    weakref.WeakKeyDictionary()
)


def mirror_of(state: ClusterState, place: Placement) -> ShareMirror | None:
    """The mirror ``place`` (a policy of this module) keeps for ``state``, if built yet."""
    return _MIRRORS.get(state, {}).get(id(place))


def make_share_placement(
    policy: str,
    *,
    mix: TypicalMix | None = None,
    tie_break: str = "name",
    seed: int = DEFAULT_SEED,
    threshold: float = TYPICAL_COVERAGE,
) -> Placement:
    """An engine placement running :data:`clustersim.fragmentation.POLICIES` ``[policy]``.

    ``mix`` is FGD's typical mix (None for ``fgd``: built lazily from the jobs seen,
    see the module docstring; ignored by the other policies). ``tie_break`` is
    ``"name"`` (lowest node id) or ``"random"``; ``seed`` seeds the per-state
    generator; ``threshold`` is the lazy mix's coverage. Register the result with
    :func:`~clustersim.schedulers.placement.register_placement` to use it by name.
    """
    try:
        choose: Policy = POLICIES[policy]
    except KeyError:
        raise UnknownNameError("fragmentation policy", policy, POLICIES) from None
    if tie_break not in TIE_BREAKS:
        raise UnknownNameError("tie-break rule", tie_break, TIE_BREAKS)
    lazy = policy == "fgd" and mix is None
    fixed = mix if policy == "fgd" else None

    def place(job: Job, state: ClusterState) -> tuple[int, ...] | None:
        if state.index_for(job.device_type) is None:
            return None
        per = _MIRRORS.get(state)
        if per is None:
            per = _MIRRORS[state] = {}
        m = per.get(id(place))
        if m is None:
            m = per[id(place)] = ShareMirror(state, fixed, seed, lazy, threshold)
        if job.num_gpus > m.largest(job.device_type) or (job.num_gpus > 1 and job.gpu_milli < FULL):
            return PLACEMENTS["pack"](job, state)
        if lazy:
            m.observe(job)
        shape = (job.num_gpus, job.gpu_milli, job.device_type)
        if m.failed.get(shape, -1) == m.grow:
            return None  # nothing was freed since this shape last fitted nowhere
        m.sync(state)
        pod = PodRequest(0, 0, job.num_gpus, job.gpu_milli, job.device_type or "", job.id)
        got = choose(m.share, pod, m.rng, tie_break)
        if got is None:
            m.failed[shape] = m.grow
            return None
        node, gpus = got
        f = m.first[node]
        return tuple(f + g for g in gpus)

    place.__name__ = place.__qualname__ = f"share_{policy}"
    place.__doc__ = f"Engine placement running fragmentation.{policy} (see share_placement)."
    return place


def make_fgd_placement(
    mix: TypicalMix | None = None, *, tie_break: str = "name", seed: int = DEFAULT_SEED
) -> Placement:
    """FGD as an engine placement against the typical ``mix`` (None: lazy, from jobs seen)."""
    return make_share_placement("fgd", mix=mix, tie_break=tie_break, seed=seed)


def _register_all() -> dict[str, Placement]:
    out: dict[str, Placement] = {}
    for name, policy in REGISTERED.items():
        out[name] = register_placement(name)(make_share_placement(policy))
    return out


SHARE_PLACEMENTS: dict[str, Placement] = _register_all()
"""The registered policies by name (also in :data:`~clustersim.schedulers.placement.PLACEMENTS`)."""
