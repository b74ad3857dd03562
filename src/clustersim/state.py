"""Device occupancy of a cluster and the index structures placement queries use.

:class:`ClusterState` is the single source of truth for which device is used by
how much (in milli-devices; 1000 = whole device). Only the engine mutates it,
through :meth:`ClusterState.allocate` and :meth:`ClusterState.release`, which
check every device first and raise :class:`CapacityError` on any
over-allocation. Schedulers and placement policies read it.

Per-event cost: an allocation or release of ``k`` devices touching ``m`` nodes
costs O(k + m log N) for N nodes. Placement queries never scan all devices:

* :class:`NodeIndex` keeps, per device type, a max segment tree over the
  number of fully free devices per node (first-fit and most-free queries in
  O(log N)) and one lazy min-heap of nodes per free count (best-fit in
  O(G log N), G = largest node size);
* partly used devices (fractional jobs) sit in a sorted list keyed by
  ``(free_milli, device)`` for best-fit share placement in O(log n).

Placement policies that need more (per-level free counts for topology-aware
placement) build their own index once, keep it in :attr:`ClusterState.indexes`
and stay current through :attr:`ClusterState.listeners`, which every node
change calls; with no listener the hot path pays one empty loop. Policies that
mirror per-device shares (GPU sharing) use :attr:`ClusterState.usage_listeners`,
called once per :meth:`ClusterState.allocate` / :meth:`ClusterState.release`.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from clustersim.errors import ClusterSimError
from clustersim.topology import Cluster

FULL = 1000


class CapacityError(ClusterSimError):
    """An allocation would over-book a device (the message names the device)."""


class NodeIndex:
    """Free-capacity index over a subset of nodes (all nodes, or those of one device type).

    Positions are local (0..len(nodes)-1) in increasing global node order, so
    "lowest position" means "lowest node id".
    """

    __slots__ = (
        "buckets",
        "free",
        "max_size",
        "nodes",
        "partial",
        "pos_of",
        "size",
        "total",
        "tree",
    )

    def __init__(self, nodes: Sequence[int], free_counts: Sequence[int], max_size: int) -> None:
        self.nodes: list[int] = list(nodes)
        self.pos_of: dict[int, int] = {n: i for i, n in enumerate(self.nodes)}
        n = len(self.nodes)
        size = 1
        while size < max(n, 1):
            size *= 2
        self.size = size
        self.free: list[int] = [free_counts[nd] for nd in self.nodes]
        self.total = sum(self.free)
        self.tree: list[int] = [0] * (2 * size)
        for i, v in enumerate(self.free):
            self.tree[size + i] = v
        for i in range(size - 1, 0, -1):
            a, b = self.tree[2 * i], self.tree[2 * i + 1]
            self.tree[i] = a if a >= b else b
        # best-fit buckets are built on first use (only ``pack`` needs them)
        self.max_size = max_size
        self.buckets: list[list[int]] = []
        # partly used devices of these nodes: sorted (free_milli, device)
        self.partial: list[tuple[int, int]] = []

    # -- updates
    def set_free(self, node: int, value: int) -> None:
        """Set the fully-free device count of global ``node``."""
        pos = self.pos_of[node]
        old = self.free[pos]
        if old == value:
            return
        self.total += value - old
        self.free[pos] = value
        i = self.size + pos
        tree = self.tree
        tree[i] = value
        v = value  # climb carrying the subtree max; stop where an ancestor is unchanged
        while i > 1:
            s = tree[i ^ 1]
            if s > v:
                v = s
            i >>= 1
            if tree[i] == v:
                break
            tree[i] = v
        if self.buckets:
            heapq.heappush(self.buckets[value], pos)

    # -- queries
    @property
    def max_free(self) -> int:
        """Largest number of fully free devices on one node."""
        return self.tree[1]

    def first_with(self, k: int, start: int = 0) -> int:
        """Lowest position >= ``start`` whose node has >= ``k`` free devices, or -1."""
        tree, size = self.tree, self.size
        if tree[1] < k or start >= len(self.nodes):
            return -1
        # climb from the leaf at ``start`` until a subtree to the right can satisfy k
        i = size + start
        if tree[i] >= k:
            return start
        while True:
            if i & 1 == 0 and tree[i + 1] >= k:
                i += 1
                break
            i >>= 1
            if i <= 1:
                return -1
        while i < size:
            i = 2 * i if tree[2 * i] >= k else 2 * i + 1
        return i - size

    def argmax(self) -> int:
        """Position of the node with the most free devices (lowest position on ties)."""
        i = 1
        tree = self.tree
        while i < self.size:
            i = 2 * i if tree[2 * i] >= tree[2 * i + 1] else 2 * i + 1
        return i - self.size

    def best_fit(self, k: int) -> int:
        """Position of the node with the fewest free devices >= ``k`` (lowest on ties), or -1."""
        if self.tree[1] < k:
            return -1
        free = self.free
        if not self.buckets:
            self.buckets = [[] for _ in range(self.max_size + 1)]
            for i, v in enumerate(free):
                self.buckets[v].append(i)
        for c in range(max(k, 1), len(self.buckets)):
            b = self.buckets[c]
            while b and free[b[0]] != c:
                heapq.heappop(b)
            if b:
                return b[0]
        return -1


class ClusterState:
    """Occupancy of every device, with fast placement indexes."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.node_of: list[int] = cluster.node_of.tolist()  # plain list: fast scalar reads
        self.used: list[int] = [0] * cluster.num_devices
        self.node_free: list[int] = list(cluster.node_size)
        self.free_devices: list[list[int]] = [
            list(cluster.node_devices(n)) for n in range(cluster.num_nodes)
        ]
        self.free_total = cluster.num_devices
        self.used_milli_total = 0
        self.down: set[int] = set()
        self.listeners: list[Callable[[int, int], None]] = []
        """Called as ``fn(node, free)`` after a node's fully free count changed; placement
        policies register here to keep their own indexes current (see ``indexes``)."""
        self.usage_listeners: list[Callable[[Sequence[int], int], None]] = []
        """Called as ``fn(devices, milli)`` after every :meth:`allocate` (``milli`` > 0) and
        :meth:`release` (``-milli``) with the devices it changed: O(k) per-device mirrors."""
        self.indexes: dict[str, Any] = {}
        """Extra indexes built lazily by placement policies (e.g. per-level free counts)."""
        gmax = cluster.max_node_size
        self.all = NodeIndex(range(cluster.num_nodes), self.node_free, gmax)
        self.by_type: dict[str, NodeIndex] = {}
        self._node_idx: list[list[NodeIndex]] = [[] for _ in range(cluster.num_nodes)]
        """Per node, the indexes besides ``all`` that cover it (device type, type sets)."""
        self._alternatives: dict[frozenset[str], NodeIndex | None] = {}
        if len(cluster.device_types) > 1:
            for t in cluster.device_types:
                nodes = [n for n in range(cluster.num_nodes) if cluster.node_type[n] == t]
                idx = self.by_type[t] = NodeIndex(nodes, self.node_free, gmax)
                for n in nodes:
                    self._node_idx[n].append(idx)

    # ------------------------------------------------------------------ reads
    @property
    def capacity(self) -> int:
        """Number of devices in the cluster."""
        return self.cluster.num_devices

    def index_for(self, device_type: str | None) -> NodeIndex | None:
        """The index of nodes a job of ``device_type`` may use (None: no such device here)."""
        if device_type is None:
            return self.all
        if "|" in device_type:
            return self._index_for_set(frozenset(device_type.split("|")))
        if not self.by_type:
            return self.all if device_type == self.cluster.device_types[0] else None
        return self.by_type.get(device_type)

    def _index_for_set(self, types: frozenset[str]) -> NodeIndex | None:
        """Index over nodes of any of ``types`` (``"A|B"`` device types), built on first use."""
        if types in self._alternatives:
            return self._alternatives[types]
        c = self.cluster
        nodes = [n for n in range(c.num_nodes) if c.node_type[n] in types]
        idx: NodeIndex | None = None
        if len(nodes) == c.num_nodes:
            idx = self.all
        elif nodes:
            idx = NodeIndex(nodes, self.node_free, c.max_node_size)
            for n in nodes:
                self._node_idx[n].append(idx)
            for n in nodes:  # bring its share list up to date
                for d in c.node_devices(n):
                    if 0 < self.used[d] < FULL:
                        insort(idx.partial, (FULL - self.used[d], d))
        self._alternatives[types] = idx
        return idx

    def free_on(self, node: int) -> list[int]:
        """Fully free devices of ``node`` in increasing id order (do not modify)."""
        return self.free_devices[node]

    # ------------------------------------------------------------------ writes
    def _node_changed(self, node: int) -> None:
        v = self.node_free[node]
        self.all.set_free(node, v)
        for idx in self._node_idx[node]:
            idx.set_free(node, v)
        for fn in self.listeners:
            fn(node, v)

    def _share_remove(self, node: int, key: tuple[int, int]) -> None:
        for idx in (self.all, *self._node_idx[node]):
            del idx.partial[bisect_left(idx.partial, key)]

    def _share_add(self, node: int, key: tuple[int, int]) -> None:
        for idx in (self.all, *self._node_idx[node]):
            insort(idx.partial, key)

    def check(self, devices: Sequence[int], milli: int) -> str | None:
        """Why ``devices`` cannot take ``milli`` each, or None if they can."""
        n = self.cluster.num_devices
        seen: set[int] = set()
        used = self.used
        for d in devices:
            if not (0 <= d < n):
                return f"device {d} does not exist (cluster has devices 0..{n - 1})"
            if d in seen:
                return f"device {d} listed twice"
            seen.add(d)
            if d in self.down:
                return f"device {d} is down"
            if used[d] + milli > FULL:
                return f"device {d} is already in use ({used[d]}/1000 milli used, {milli} asked)"
        return None

    def allocate(self, devices: Sequence[int], milli: int = FULL) -> None:
        """Take ``milli`` of each device; raises :class:`CapacityError` if any is over-booked."""
        if milli != FULL:
            self._allocate_shared(devices, milli)
            for fn in self.usage_listeners:
                fn(devices, milli)
            return
        used = self.used
        n = len(used)
        down = self.down
        node_of = self.node_of
        touched: dict[int, list[int]] = {}
        for i, d in enumerate(devices):
            if not (0 <= d < n) or used[d] or (down and d in down):
                for x in devices[:i]:  # undo, then explain
                    used[x] = 0
                raise CapacityError(self.check(devices, milli) or f"device {d} unavailable")
            used[d] = FULL
            node = node_of[d]
            lst = touched.get(node)
            if lst is None:
                touched[node] = [d]
            else:
                lst.append(d)
        self._take_free(touched)
        self.used_milli_total += FULL * len(devices)
        for fn in self.usage_listeners:
            fn(devices, FULL)

    def _take_free(self, touched: dict[int, list[int]]) -> None:
        all_idx, node_idx = self.all, self._node_idx
        for node, devs in touched.items():
            fl = self.free_devices[node]
            k = len(devs)
            if fl[:k] == devs:
                del fl[:k]
            else:
                gone = set(devs)
                fl[:] = [x for x in fl if x not in gone]
            v = self.node_free[node] - k
            self.node_free[node] = v
            self.free_total -= k
            all_idx.set_free(node, v)
            for idx in node_idx[node]:
                idx.set_free(node, v)
            for fn in self.listeners:
                fn(node, v)

    def _allocate_shared(self, devices: Sequence[int], milli: int) -> None:
        problem = self.check(devices, milli)
        if problem is not None:
            raise CapacityError(problem)
        node_of = self.node_of
        touched: dict[int, list[int]] = {}
        used = self.used
        for d in devices:
            before = used[d]
            after = before + milli
            used[d] = after
            node = node_of[d]
            if before == 0:
                touched.setdefault(node, []).append(d)
            else:
                self._share_remove(node, (FULL - before, d))
            if 0 < after < FULL:
                self._share_add(node, (FULL - after, d))
        self._take_free(touched)
        self.used_milli_total += milli * len(devices)

    def release(self, devices: Iterable[int], milli: int = FULL) -> None:
        """Give back ``milli`` of each device."""
        if self.usage_listeners and not isinstance(devices, Sequence):
            devices = tuple(devices)
        if milli != FULL:
            self._release_shared(devices, milli)
            for fn in self.usage_listeners:
                fn(cast(Sequence[int], devices), -milli)
            return
        node_of = self.node_of
        used = self.used
        down = self.down
        touched: dict[int, list[int]] = {}
        count = 0
        for d in devices:
            count += 1
            if used[d] != FULL:
                raise CapacityError(f"device {d} released more than it held")
            used[d] = 0
            if down and d in down:
                continue
            node = node_of[d]
            lst = touched.get(node)
            if lst is None:
                touched[node] = [d]
            else:
                lst.append(d)
        self._give_free(touched)
        self.used_milli_total -= FULL * count
        for fn in self.usage_listeners:
            fn(cast(Sequence[int], devices), -FULL)

    def _give_free(self, touched: dict[int, list[int]]) -> None:
        all_idx, node_idx = self.all, self._node_idx
        for node, devs in touched.items():
            fl = self.free_devices[node]
            if not fl or fl[-1] < devs[0]:
                fl.extend(devs)
                if len(devs) > 1:
                    fl.sort()
            else:
                fl.extend(devs)
                fl.sort()
            k = len(devs)
            v = self.node_free[node] + k
            self.node_free[node] = v
            self.free_total += k
            all_idx.set_free(node, v)
            for idx in node_idx[node]:
                idx.set_free(node, v)
            for fn in self.listeners:
                fn(node, v)

    def _release_shared(self, devices: Iterable[int], milli: int) -> None:
        node_of = self.node_of
        used = self.used
        touched: dict[int, list[int]] = {}
        count = 0
        for d in devices:
            count += 1
            before = used[d]
            after = before - milli
            if after < 0:
                raise CapacityError(f"device {d} released more than it held")
            used[d] = after
            node = node_of[d]
            if 0 < before < FULL:
                self._share_remove(node, (FULL - before, d))
            if after == 0:
                if d not in self.down:
                    touched.setdefault(node, []).append(d)
            elif after < FULL:
                self._share_add(node, (FULL - after, d))
        self._give_free(touched)
        self.used_milli_total -= milli * count

    def set_down(self, devices: Iterable[int]) -> None:
        """Remove idle ``devices`` from the free pool (failure); they must hold nothing."""
        for d in devices:
            if d in self.down:
                continue
            if self.used[d]:
                raise CapacityError(f"device {d} is in use; release it before taking it down")
            self.down.add(d)
            node = self.node_of[d]
            self.free_devices[node].remove(d)
            self.node_free[node] -= 1
            self.free_total -= 1
            self._node_changed(node)

    def set_up(self, devices: Iterable[int]) -> None:
        """Return repaired ``devices`` to the free pool."""
        for d in devices:
            if d not in self.down:
                continue
            self.down.discard(d)
            node = self.node_of[d]
            insort(self.free_devices[node], d)
            self.node_free[node] += 1
            self.free_total += 1
            self._node_changed(node)
