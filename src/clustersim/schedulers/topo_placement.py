"""Topology-aware placement policies: ``consolidate``, ``buddy`` (HiveD-style) and ``best_fit``.

This module owns three registered placement policies and the incremental
indexes they query. Like every policy (see :mod:`clustersim.schedulers.placement`)
each is ``(job, state) -> devices | None``, deterministic, uses only nodes of
the job's ``device_type``, takes the lowest-numbered free devices within a
node, and places fractional jobs (``gpu_milli`` < 1000) on the partly used
device with the least free share that fits (lowest id on ties), falling back
to the policy's own rule for a whole free device.

Domains are the topology's levels: a level-``l`` *group* is a run of
consecutive nodes (level 0 = one node); its *children* are the level-``l-1``
groups inside it. To take ``k`` devices from a group (the **fill** rule): if
some child holds ``>= k``, take them from the child with the fewest such
devices (best fit; lowest id on ties) and recurse; otherwise take every free
device of one child and repeat for the rest: the child with the *most* free
devices (``consolidate``, ``buddy``: a job spans as few children as possible)
or with the *fewest* (``best_fit``: fill holes first); lowest id on ties.

``consolidate``
    Smallest domain first: the lowest level at which some group has ``>= k``
    free devices; among that level's groups the one with the fewest free
    devices that fits (best fit; lowest id on ties); then fill it. A job that
    fits in a node gets the tightest node; one that fits in a supernode, rack
    or pod never spans more.
``best_fit``
    Bin packing, topology as bins: among the best-fit group of every level
    (fewest free ``>= k``), the one leaving the fewest free devices
    (``free - k``); ties go to the lower level, then the lowest id; then fill
    it filling holes first (smallest partly free child first). It keeps whole
    nodes and domains free for later jobs at the cost of locality (a job may
    span several partly used nodes).
``buddy``
    HiveD-style buddy cells (Zhao et al., OSDI'20). Within a node, cells are
    aligned power-of-two blocks of devices (1, 2, 4, ... up to the largest
    power of two <= node size; a node of 6 holds blocks 4 + 2); above the node,
    cells are the topology's groups, and a multi-node cell is made of whole
    free nodes. A job of ``k`` devices asks for a cell of ``c = 2^ceil(log2 k)``:

    * if ``c`` fits a node's block size: the *smallest* maximal free block of
      size ``>= c`` anywhere (an exact-size free cell before splitting a larger
      one, as a buddy allocator does); ties go to the lowest node id, then the
      lowest address in the node (address order keeps higher-numbered nodes
      and domains intact). The job takes the first ``k`` devices of the
      block's leftmost ``c``-sized sub-block. If no such block is free the job
      waits, even when scattered devices would suffice;
    * otherwise: whole free nodes only. Like ``consolidate`` but counting
      only devices of fully free nodes: the lowest level whose best-fit group
      has ``>= k`` of them, then fill; the last node may be used in part (its
      rest stays free for small jobs). If no group has enough whole free
      nodes the job waits.

Cost per placement: O(levels x log N) bisections on per-level sorted lists plus
O(children taken); ``buddy`` in a node O(G) for a node of G devices. The
indexes are built once per cluster state (O(N x levels)) and kept current
through :attr:`ClusterState.listeners` at O(levels x log N) per node change.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable

import numpy as np

from clustersim.schedulers.placement import register_placement
from clustersim.state import FULL, ClusterState
from clustersim.workload.job import Job

_Rule = Callable[[ClusterState, str | None, int], list[int] | None]


# --------------------------------------------------------------------------- indexes


class LevelCounts:
    """Per-level group totals of one node metric, with sorted views for best-fit queries.

    ``whole=False`` counts free devices; ``whole=True`` counts devices of
    fully free nodes (a node contributes its size or nothing). Only nodes of
    ``device_type`` count (all nodes when it is None). For level ``l``:
    ``val[l][g]`` is group ``g``'s total, ``glob[l]`` all ``(total, g)``
    sorted, and ``kids[l][g]`` the sorted ``(total, child)`` of its children
    (level ``l-1`` groups).
    """

    def __init__(self, state: ClusterState, device_type: str | None, whole: bool) -> None:
        c = state.cluster
        n = c.num_nodes
        self.state = state
        self.whole = whole
        self.sizes = [lv.nodes for lv in c.levels]
        self.size = c.node_size
        if device_type is None:
            self.member = [True] * n
        else:
            self.member = [t == device_type for t in c.node_type]
        self.node_val = [self._metric(i, state.node_free[i]) for i in range(n)]
        vals = np.asarray(self.node_val, dtype=np.int64)
        ids = np.arange(n, dtype=np.int64)
        self.val: list[list[int]] = []
        self.glob: list[list[tuple[int, int]]] = []
        self.kids: list[list[list[tuple[int, int]]]] = []
        for s in self.sizes:
            g = ids // s
            tot = np.bincount(g, weights=vals).astype(np.int64).tolist()
            self.val.append(tot)
            self.glob.append(sorted(zip(tot, range(len(tot)), strict=True)))
        for lvl, s in enumerate(self.sizes):
            if lvl == 0:
                self.kids.append([])
                continue
            r = s // self.sizes[lvl - 1]
            below = self.val[lvl - 1]
            groups: list[list[tuple[int, int]]] = [[] for _ in range(len(self.val[lvl]))]
            for ch, v in enumerate(below):
                groups[ch // r].append((v, ch))
            for lst in groups:
                lst.sort()
            self.kids.append(groups)
        state.listeners.append(self.on_change)

    def _metric(self, node: int, free: int) -> int:
        if not self.member[node]:
            return 0
        if self.whole:
            return free if free == self.size[node] else 0
        return free

    def on_change(self, node: int, free: int) -> None:
        """Listener: node ``node`` now has ``free`` fully free devices."""
        new = self._metric(node, free)
        old = self.node_val[node]
        if new == old:
            return
        self.node_val[node] = new
        delta = new - old
        sizes = self.sizes
        last = len(sizes) - 1
        for lvl, s in enumerate(sizes):
            g = node // s
            ov = self.val[lvl][g]
            nv = ov + delta
            self.val[lvl][g] = nv
            _move(self.glob[lvl], (ov, g), (nv, g))
            if lvl < last:
                _move(self.kids[lvl + 1][node // sizes[lvl + 1]], (ov, g), (nv, g))

    # -- queries
    def top(self) -> int:
        """Total over the whole cluster."""
        return sum(self.val[-1])

    def best(self, lvl: int, k: int) -> tuple[int, int] | None:
        """``(total, group)`` with the smallest total ``>= k`` at ``lvl`` (lowest id on ties)."""
        lst = self.glob[lvl]
        i = bisect_left(lst, (k, -1))
        return lst[i] if i < len(lst) else None

    def fill(
        self, lvl: int, g: int, k: int, out: list[tuple[int, int]], holes: bool = False
    ) -> None:
        """Append ``(node, count)`` takes of ``k`` devices from group ``g`` by the fill rule.

        ``holes``: when no child fits the rest, take the child with the *fewest*
        free devices (``best_fit``'s hole filling) instead of the most.
        """
        if lvl == 0:
            out.append((g, k))
            return
        lst = self.kids[lvl][g]
        taken: set[int] = set()
        need = k
        while need > 0:
            j = len(lst) - 1
            while j >= 0 and lst[j][1] in taken:
                j -= 1
            if j < 0 or lst[j][0] <= 0:
                raise AssertionError("fill: group total out of date")  # pragma: no cover
            top = lst[j][0]
            if top >= need:
                i = bisect_left(lst, (need, -1))
                while lst[i][1] in taken:
                    i += 1
                self.fill(lvl - 1, lst[i][1], need, out, holes)
                return
            i = bisect_left(lst, (1, -1) if holes else (top, -1))
            while lst[i][1] in taken:
                i += 1
            child, got = lst[i][1], lst[i][0]
            self.fill(lvl - 1, child, got, out, holes)
            taken.add(child)
            need -= got


def _move(lst: list[tuple[int, int]], old: tuple[int, int], new: tuple[int, int]) -> None:
    i = bisect_left(lst, old)
    del lst[i]
    insort(lst, new)


def _blocks(free_local: list[int], size: int) -> list[tuple[int, int]]:
    """Maximal free aligned power-of-two blocks ``(start, length)`` of a node, by address.

    ``free_local`` are the node's free device offsets (sorted); positions at or
    beyond ``size`` do not exist.
    """
    span = 1
    while span < size:
        span *= 2
    free = [False] * span
    for x in free_local:
        free[x] = True
    pre = [0] * (span + 1)
    for i, f in enumerate(free):
        pre[i + 1] = pre[i] + f
    out: list[tuple[int, int]] = []
    stack = [(0, span)]
    while stack:
        lo, ln = stack.pop()
        cnt = pre[lo + ln] - pre[lo]
        if cnt == ln:
            out.append((lo, ln))
        elif cnt and ln > 1:
            half = ln // 2
            stack.append((lo + half, half))
            stack.append((lo, half))
    return out


class BuddyIndex:
    """Per node, the sizes of its maximal free aligned blocks; per size, a lazy min-heap of nodes.

    ``mask[node]`` has bit ``j`` set when the node holds a maximal free block of
    ``2^j`` devices. ``heaps[j]`` holds node ids (stale entries are dropped on
    query).
    """

    def __init__(self, state: ClusterState, device_type: str | None) -> None:
        c = state.cluster
        self.state = state
        self.first = c.node_first
        self.size = c.node_size
        self.member = [device_type is None or t == device_type for t in c.node_type]
        sizes = [s for s, m in zip(c.node_size, self.member, strict=True) if m]
        self.max_block = 1 << (max(sizes).bit_length() - 1) if sizes else 0
        self.bits = self.max_block.bit_length()
        self.mask = [0] * c.num_nodes
        self.heaps: list[list[int]] = [[] for _ in range(self.bits)]
        for node in range(c.num_nodes):
            if self.member[node]:
                m = self._profile(node)
                self.mask[node] = m
                for j in range(self.bits):
                    if m >> j & 1:
                        self.heaps[j].append(node)  # ascending ids: already a heap
        state.listeners.append(self.on_change)

    def _profile(self, node: int) -> int:
        f = self.first[node]
        m = 0
        for _, ln in _blocks([d - f for d in self.state.free_devices[node]], self.size[node]):
            m |= ln
        return m

    def on_change(self, node: int, free: int) -> None:
        """Listener: recompute ``node``'s block sizes."""
        if not self.member[node]:
            return
        new = self._profile(node)
        old = self.mask[node]
        self.mask[node] = new
        gained = new & ~old
        j = 0
        while gained:
            if gained & 1:
                heapq.heappush(self.heaps[j], node)
            gained >>= 1
            j += 1

    def find(self, c: int) -> tuple[int, int] | None:
        """``(node, block_len)``: smallest block size ``>= c`` held by any node, lowest node id."""
        j = c.bit_length() - 1
        mask = self.mask
        for jj in range(j, self.bits):
            h = self.heaps[jj]
            while h and not (mask[h[0]] >> jj & 1):
                heapq.heappop(h)
            if h:
                return h[0], 1 << jj
        return None


def _counts(state: ClusterState, device_type: str | None, whole: bool) -> LevelCounts:
    key = f"topo:{'whole' if whole else 'free'}:{device_type}"
    idx = state.indexes.get(key)
    if idx is None:
        idx = LevelCounts(state, device_type, whole)
        state.indexes[key] = idx
    assert isinstance(idx, LevelCounts)
    return idx


def _buddy_index(state: ClusterState, device_type: str | None) -> BuddyIndex:
    key = f"topo:buddy:{device_type}"
    idx = state.indexes.get(key)
    if idx is None:
        idx = BuddyIndex(state, device_type)
        state.indexes[key] = idx
    assert isinstance(idx, BuddyIndex)
    return idx


# --------------------------------------------------------------------------- rules


def _devices(state: ClusterState, takes: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    for node, cnt in takes:
        out.extend(state.free_devices[node][:cnt])
    return out


def _consolidate_rule(state: ClusterState, dtype: str | None, k: int) -> list[int] | None:
    idx = _counts(state, dtype, False)
    for lvl in range(len(idx.sizes)):
        hit = idx.best(lvl, k)
        if hit is not None:
            takes: list[tuple[int, int]] = []
            idx.fill(lvl, hit[1], k, takes)
            return _devices(state, takes)
    return None


def _best_fit_rule(state: ClusterState, dtype: str | None, k: int) -> list[int] | None:
    idx = _counts(state, dtype, False)
    choice: tuple[int, int, int] | None = None  # (leftover, level, group)
    for lvl in range(len(idx.sizes)):
        hit = idx.best(lvl, k)
        if hit is not None and (choice is None or hit[0] - k < choice[0]):
            choice = (hit[0] - k, lvl, hit[1])
    if choice is None:
        return None
    takes: list[tuple[int, int]] = []
    idx.fill(choice[1], choice[2], k, takes, holes=True)
    return _devices(state, takes)


def _buddy_rule(state: ClusterState, dtype: str | None, k: int) -> list[int] | None:
    bud = _buddy_index(state, dtype)
    c = 1
    while c < k:
        c *= 2
    if c <= bud.max_block:
        hit = bud.find(c)
        if hit is None:
            return None
        node, ln = hit
        f = state.cluster.node_first[node]
        free = state.free_devices[node]
        lo = next(
            s for s, n in _blocks([d - f for d in free], state.cluster.node_size[node]) if n == ln
        )
        return [f + lo + i for i in range(k)]
    whole = _counts(state, dtype, True)
    for lvl in range(len(whole.sizes)):
        hit2 = whole.best(lvl, k)
        if hit2 is not None:
            takes: list[tuple[int, int]] = []
            whole.fill(lvl, hit2[1], k, takes)
            return _devices(state, takes)
    return None


def _type_key(state: ClusterState, device_type: str | None) -> tuple[bool, str | None]:
    """(usable, index key) like :meth:`ClusterState.index_for`."""
    if device_type is None:
        return True, None
    if not state.by_type:
        return device_type == state.cluster.device_types[0], None
    return device_type in state.by_type, device_type


def _make(rule: _Rule, doc: str) -> Callable[[Job, ClusterState], tuple[int, ...] | None]:
    def place(job: Job, state: ClusterState) -> tuple[int, ...] | None:
        ok, key = _type_key(state, job.device_type)
        node_idx = state.index_for(job.device_type)
        if not ok or node_idx is None:
            return None
        if job.gpu_milli < FULL:
            out: list[int] = []
            partial = node_idx.partial
            i = bisect_left(partial, (job.gpu_milli, -1))
            seen: set[int] = set()
            while len(out) < job.num_gpus and i < len(partial):
                d = partial[i][1]
                if d not in seen:
                    out.append(d)
                    seen.add(d)
                i += 1
            if len(out) < job.num_gpus:
                more = rule(state, key, job.num_gpus - len(out))
                if more is None:
                    return None
                out.extend(more)
            return tuple(out)
        k = job.num_gpus
        if k > state.free_total or k > node_idx.total:
            return None
        devs = rule(state, key, k)
        return tuple(devs) if devs is not None else None

    place.__doc__ = doc
    return place


_SHARED_DOC = """

    Only nodes of the job's ``device_type`` count (all nodes when it is None);
    within a node the lowest-numbered free devices are taken. A fractional job
    (``gpu_milli`` < 1000) first takes, per device, the partly used device with
    the least free share that fits (lowest id on ties), then whole free devices
    by the rule above. Returns None when the job does not fit now."""

consolidate = register_placement("consolidate")(
    _make(
        _consolidate_rule,
        """Smallest domain first (node -> supernode -> rack -> pod -> ...).

    Take the lowest level at which some group has ``>= k`` free devices; among
    that level's groups the one with the fewest free devices that still fits
    (lowest id on ties). Fill it: if a child (level below) holds ``>= k`` take
    them from the child with the fewest such devices (lowest id on ties) and
    recurse; otherwise take every free device of the child with the most free
    devices (lowest id on ties) and repeat for the rest."""
        + _SHARED_DOC,
    )
)
best_fit = register_placement("best_fit")(
    _make(
        _best_fit_rule,
        """Bin packing with the topology's domains as bins.

    For every level, the group with the fewest free devices ``>= k`` (lowest id
    on ties); of these, the one leaving the fewest free devices (``free - k``),
    ties to the lower level. Fill it filling holes first: if a child holds
    ``>= k`` take them from the child with the fewest such devices (lowest id on
    ties) and recurse; otherwise take every free device of the child with the
    *fewest* free devices (> 0; lowest id on ties) and repeat for the rest."""
        + _SHARED_DOC,
    )
)
buddy = register_placement("buddy")(
    _make(
        _buddy_rule,
        """HiveD-style buddy cells (Zhao et al., OSDI'20).

    Cells in a node are aligned power-of-two device blocks (1, 2, 4, ... up to
    the largest power of two <= node size); above the node, whole free nodes.
    With ``c = 2^ceil(log2 k)``: if ``c`` fits a node block, take the smallest
    maximal free aligned block of size ``>= c`` in the cluster (lowest node id,
    then lowest address, on ties) and the first ``k`` devices of its leftmost
    ``c``-block; none free: wait. Otherwise count only devices of fully free
    nodes: the lowest level whose groups hold ``>= k`` of them, the group with
    the fewest (lowest id on ties), filled most-free child first (the last node
    may be used in part); none: wait."""
        + _SHARED_DOC,
    )
)
