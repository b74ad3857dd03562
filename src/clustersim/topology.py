"""Cluster topology: devices in nodes, nodes in nested domains (supernode, rack, pod, fabric).

A :class:`Cluster` is static hardware: how many devices, which node each sits
in, each node's device model, and a stack of :class:`Level` s above the node,
innermost first. ``levels[0]`` is the node itself (its scale-up link, e.g.
NVLink); each further level groups whole nodes (a supernode, a rack, a pod)
and carries the per-device bandwidth (bytes/s, one direction) and latency (s)
available between devices that are in the same group of that level but in
different groups of the level below. The last level spans every node.

Fast placement uses the flat arrays (``node_first``, ``node_size``,
``group_of``); :meth:`Cluster.graph` builds the equivalent networkx graph on
demand for analysis and drawing.

Topology YAML (paths in scenarios are relative to the scenario file)::

    name: dgx-h100-64
    nodes:                                   # node groups, in device-id order
      - {count: 64, gpus: 8, device: H100}
    node_link: {name: nvlink, bandwidth: 450.0e9, latency: 1.0e-6}
    levels:                                  # above the node, innermost first
      - {name: leaf, nodes: 4, bandwidth: 50.0e9, latency: 2.0e-6}
      - {name: spine, nodes: 64, bandwidth: 50.0e9, latency: 3.0e-6}

Optional keys:

* per level: ``oversubscription`` (bandwidth is divided by it) and
  ``scale_up: true`` for a supernode level on the scale-up fabric (NVL72,
  UB); scale-up levels must sit directly above the node level;
* per node group: ``link_bandwidth`` (that group's own scale-up bandwidth;
  by default each group takes its device's catalogue ``scale_up_bw`` unless
  ``node_link.bandwidth`` is given) and ``undisclosed: true`` for a device the
  catalogue cannot know (Alibaba openb's ``G2``/``G3``), kept by name;
* ``links:`` per-node exceptions, e.g. a degraded NIC:
  ``[{node: 3, level: leaf, bandwidth: 25.0e9}]`` (node index in device-id
  order, a level name, bytes/s);
* ``allow_partial: true`` lets the last group of a level be partly populated.

Errors (a domain smaller than the one below it, zero bandwidth, an unknown
device, a link to an unknown node or level, groups that do not tile the
nodes) name the file and the element.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clustersim.errors import ClusterSimError, TopologyError

DEFAULT_NODE_BW = 150e9
"""Fallback scale-up bandwidth (bytes/s) when a device has none in the catalogue."""
DEFAULT_FABRIC_BW = 12.5e9
"""Fallback scale-out bandwidth (bytes/s) per device: 100 Gb/s."""


@dataclass(frozen=True, slots=True)
class Level:
    """One level of the hierarchy.

    Attributes:
        name: e.g. ``node``, ``supernode``, ``rack``, ``pod``, ``fabric``.
        nodes: nodes per group at this level (1 for the node level).
        bandwidth: bytes/s per device, one direction, between devices whose
            lowest common group is at this level.
        latency: seconds per hop at this level.
        scale_up: True when the level is part of the scale-up fabric (NVLink
            switch, UB, HCCS): a *supernode* level. The node level is always
            scale-up; scale-up levels sit directly above it, below every
            scale-out level.
    """

    name: str
    nodes: int
    bandwidth: float
    latency: float
    scale_up: bool = False


class Cluster:
    """Static description of a cluster; see the module docstring."""

    def __init__(
        self,
        name: str,
        node_sizes: list[int],
        node_types: list[str],
        levels: list[Level],
        *,
        link_bandwidth: Mapping[int, npt.ArrayLike] | None = None,
    ) -> None:
        if not node_sizes:
            raise TopologyError(f"topology '{name}': no nodes")
        if len(node_sizes) != len(node_types):
            raise TopologyError(f"topology '{name}': node sizes and types differ in length")
        self.name = name
        self.node_size: list[int] = list(node_sizes)
        self.node_type: list[str] = list(node_types)
        self.num_nodes = len(node_sizes)
        first = np.concatenate([[0], np.cumsum(node_sizes)]).astype(np.int64)
        self.node_first: list[int] = [int(x) for x in first[:-1]]
        self.num_devices = int(first[-1])
        self.node_of = np.repeat(np.arange(self.num_nodes, dtype=np.int64), node_sizes)
        self.levels: list[Level] = list(levels)
        self.group_of: list[np.ndarray] = [
            np.arange(self.num_nodes, dtype=np.int64) // lv.nodes for lv in self.levels
        ]
        self.device_types: list[str] = sorted(set(node_types))
        self._link_bw: dict[int, np.ndarray] = {}
        for lvl, arr in (link_bandwidth or {}).items():
            a = np.asarray(arr, dtype=np.float64)
            if not (0 <= lvl < len(self.levels)) or a.shape != (self.num_nodes,):
                raise TopologyError(
                    f"topology '{name}': link_bandwidth[{lvl}] must be one value per node "
                    f"for an existing level"
                )
            if not (a > 0).all():
                raise TopologyError(f"topology '{name}': link_bandwidth[{lvl}] must be > 0")
            self._link_bw[lvl] = a

    def node_bandwidth(self, level: int) -> np.ndarray:
        """Per-device bandwidth (bytes/s) each node gets at ``level`` (one value per node).

        Equal to ``levels[level].bandwidth`` except where the topology lists a
        per-node exception (a node group's own ``link_bandwidth``, or ``links:``).
        """
        arr = self._link_bw.get(level)
        if arr is None:
            arr = np.full(self.num_nodes, self.levels[level].bandwidth, dtype=np.float64)
            self._link_bw[level] = arr
        return arr

    @property
    def uniform_links(self) -> bool:
        """True when every node sees each level's nominal bandwidth (no per-node exceptions)."""
        return all(
            bool((arr == self.levels[lvl].bandwidth).all()) for lvl, arr in self._link_bw.items()
        )

    @cached_property
    def scale_up_top(self) -> int:
        """Index of the highest scale-up level (0 = the node; >0 = a supernode level)."""
        top = 0
        for i in range(1, len(self.levels)):
            if not self.levels[i].scale_up:
                break
            top = i
        return top

    # ------------------------------------------------------------------ builders
    @classmethod
    def uniform(
        cls,
        nodes: int,
        gpus_per_node: int,
        device: str,
        node_bandwidth: float | None = None,
        fabric_bandwidth: float | None = None,
        name: str | None = None,
    ) -> Cluster:
        """``nodes`` identical nodes of ``gpus_per_node`` devices behind one flat fabric."""
        spec = _device(device, f"cluster.device '{device}'")
        nbw = node_bandwidth or float(getattr(spec, "scale_up_bw", 0.0)) or DEFAULT_NODE_BW
        fbw = fabric_bandwidth or float(getattr(spec, "scale_out_bw", 0.0)) or DEFAULT_FABRIC_BW
        levels = [Level("node", 1, nbw, 1e-6), Level("fabric", nodes, fbw, 5e-6)]
        return cls(
            name or f"{nodes}x{gpus_per_node}-{spec.name}",
            [gpus_per_node] * nodes,
            [spec.name] * nodes,
            levels,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Cluster:
        """Load a topology file (format in the module docstring)."""
        from clustersim.config import load_yaml

        data, _ = load_yaml(path)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<topology>") -> Cluster:
        """Build from the parsed YAML mapping; errors name ``source`` and the element."""
        if not isinstance(data, dict):
            raise TopologyError(f"{source}: a topology must be a mapping")
        allowed = {"name", "nodes", "node_link", "levels", "description", "links", "allow_partial"}
        for key in data:
            if key not in allowed:
                raise TopologyError(
                    f"{source}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})"
                )
        name = str(data.get("name", Path(source).stem))
        groups = data.get("nodes")
        if not isinstance(groups, list) or not groups:
            raise TopologyError(f"{source}: 'nodes' must be a non-empty list of node groups")
        link = data.get("node_link") or {}
        if not isinstance(link, dict):
            raise TopologyError(f"{source}: node_link must be a mapping")
        explicit_bw = (
            _pos_float(link["bandwidth"], f"{source}: node_link.bandwidth")
            if "bandwidth" in link
            else None
        )
        sizes: list[int] = []
        types: list[str] = []
        counts: list[int] = []
        group_bw: list[float] = []
        group_keys = {"count", "gpus", "device", "undisclosed", "link_bandwidth"}
        for i, g in enumerate(groups):
            where = f"{source}: nodes[{i}]"
            if not isinstance(g, dict):
                raise TopologyError(
                    f"{where}: expected a mapping like {{count: 4, gpus: 8, device: H100}}"
                )
            for key in g:
                if key not in group_keys:
                    raise TopologyError(
                        f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(group_keys))})"
                    )
            count = _pos_int(g.get("count", 1), f"{where}.count")
            gpus = _pos_int(g.get("gpus"), f"{where}.gpus")
            dev_name = str(g.get("device", ""))
            if g.get("undisclosed", False) is True:
                spec = None
                _undisclosed(dev_name, f"{where}.device")
                type_name = dev_name
            else:
                spec = _device(dev_name, f"{where}.device")
                type_name = spec.name
            if "link_bandwidth" in g:
                bw = _pos_float(g["link_bandwidth"], f"{where}.link_bandwidth")
            elif explicit_bw is not None:
                bw = explicit_bw
            elif spec is not None:
                bw = float(getattr(spec, "scale_up_bw", 0.0)) or DEFAULT_NODE_BW
            else:
                raise TopologyError(
                    f"{where}: device '{dev_name}' is undisclosed (no catalogue spec), so its "
                    "scale-up bandwidth is unknown; give 'link_bandwidth' (bytes/s) for this "
                    "group or 'node_link.bandwidth' for all nodes"
                )
            sizes += [gpus] * count
            types += [type_name] * count
            counts.append(count)
            group_bw.append(bw)
        node_bw0 = explicit_bw if explicit_bw is not None else group_bw[0]
        node_level = Level(
            str(link.get("name", "node")),
            1,
            node_bw0,
            _nonneg_float(link.get("latency", 1e-6), f"{source}: node_link.latency"),
            True,
        )
        levels = [node_level]
        n_nodes = len(sizes)
        raw_levels = data.get("levels") or []
        if not isinstance(raw_levels, list):
            raise TopologyError(f"{source}: 'levels' must be a list")
        level_keys = {"name", "nodes", "bandwidth", "latency", "oversubscription", "scale_up"}
        for i, lv in enumerate(raw_levels):
            where = f"{source}: levels[{i}]"
            if not isinstance(lv, dict):
                raise TopologyError(f"{where}: expected a mapping")
            lname = str(lv.get("name", f"level{i + 1}"))
            where = f"{source}: level '{lname}'"
            for key in lv:
                if key not in level_keys:
                    raise TopologyError(
                        f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(level_keys))})"
                    )
            if any(x.name == lname for x in levels):
                raise TopologyError(f"{where}: a level with this name already exists")
            nodes = _pos_int(lv.get("nodes"), f"{where}.nodes")
            prev = levels[-1]
            if nodes < prev.nodes:
                raise TopologyError(
                    f"{where}: groups of {nodes} nodes are smaller than the level below "
                    f"('{prev.name}', {prev.nodes} nodes): a domain cannot be larger than "
                    "its parent"
                )
            if nodes % prev.nodes:
                raise TopologyError(
                    f"{where}: {nodes} nodes per group is not a multiple of "
                    f"'{prev.name}' ({prev.nodes} nodes per group)"
                )
            bw = _pos_float(lv.get("bandwidth"), f"{where}.bandwidth")
            oversub = _pos_float(lv.get("oversubscription", 1.0), f"{where}.oversubscription")
            scale_up = lv.get("scale_up", False)
            if not isinstance(scale_up, bool):
                raise TopologyError(f"{where}.scale_up: must be true or false, got {scale_up!r}")
            if scale_up and not prev.scale_up:
                raise TopologyError(
                    f"{where}: marked scale_up but the level below ('{prev.name}') is scale-out; "
                    "scale-up (supernode) levels must sit directly above the node level"
                )
            levels.append(
                Level(
                    lname,
                    nodes,
                    bw / oversub,
                    _nonneg_float(lv.get("latency", 5e-6), f"{where}.latency"),
                    scale_up,
                )
            )
        if len(levels) == 1 and n_nodes > 1:
            raise TopologyError(
                f"{source}: {n_nodes} nodes but no 'levels' connect them; add e.g. "
                "'levels: [{name: fabric, nodes: %d, bandwidth: 50.0e9}]'" % n_nodes
            )
        top = levels[-1]
        if top.nodes < n_nodes:
            raise TopologyError(
                f"{source}: top level '{top.name}' spans {top.nodes} nodes but the cluster has "
                f"{n_nodes}; add a level that spans all nodes"
            )
        partial = data.get("allow_partial", False)
        if not isinstance(partial, bool):
            raise TopologyError(f"{source}: allow_partial must be true or false")
        for lv in levels[1:]:
            if n_nodes % lv.nodes and lv is not top and not partial:
                raise TopologyError(
                    f"{source}: level '{lv.name}' groups {lv.nodes} nodes, which does not divide "
                    f"the {n_nodes} nodes (set 'allow_partial: true' if the last group is only "
                    "partly populated)"
                )
        link_bw: dict[int, np.ndarray] = {}
        if any(bw != node_bw0 for bw in group_bw):
            link_bw[0] = np.repeat(np.asarray(group_bw, dtype=np.float64), counts)
        _apply_links(data.get("links"), levels, n_nodes, link_bw, source)
        return cls(name, sizes, types, levels, link_bandwidth=link_bw)

    # ------------------------------------------------------------------ queries
    def node_devices(self, node: int) -> range:
        """Device ids of ``node``."""
        f = self.node_first[node]
        return range(f, f + self.node_size[node])

    def common_level(self, devices: list[int]) -> int:
        """Index of the innermost level whose single group holds all ``devices``."""
        nodes = np.unique(self.node_of[np.asarray(devices, dtype=np.int64)])
        if len(nodes) <= 1:
            return 0
        for i, groups in enumerate(self.group_of):
            g = groups[nodes]
            if (g == g[0]).all():
                return i
        return len(self.levels) - 1

    @cached_property
    def max_node_size(self) -> int:
        """Devices in the largest node."""
        return max(self.node_size)

    def graph(self) -> Any:
        """The hierarchy as a networkx graph.

        Vertices: ``("device", i)``, ``("node", n)`` and ``(level_name, g)``;
        edges carry ``bandwidth`` (bytes/s) and ``latency`` (s) of the level
        they enter. Built on demand; O(devices + nodes x levels).
        """
        import networkx as nx

        g = nx.Graph(name=self.name)
        node_lv = self.levels[0]
        bw0 = self.node_bandwidth(0)
        for n in range(self.num_nodes):
            g.add_node(("node", n), device_type=self.node_type[n])
            for d in self.node_devices(n):
                g.add_edge(
                    ("device", d), ("node", n), bandwidth=float(bw0[n]), latency=node_lv.latency
                )
        for i in range(1, len(self.levels)):
            lower, upper = self.levels[i - 1], self.levels[i]
            lower_name = "node" if i == 1 else lower.name
            n_lower = -(-self.num_nodes // lower.nodes)
            bw = self.node_bandwidth(i) if i == 1 else None
            for c in range(n_lower):
                parent = (c * lower.nodes) // upper.nodes
                g.add_edge(
                    (lower_name, c),
                    (upper.name, parent),
                    bandwidth=float(bw[c]) if bw is not None else upper.bandwidth,
                    latency=upper.latency,
                )
        return g

    def describe(self) -> str:
        """One-line human summary."""
        types = ", ".join(self.device_types)
        lv = " > ".join(f"{x.name}({x.nodes})" for x in reversed(self.levels))
        return f"{self.name}: {self.num_devices} devices ({types}) in {self.num_nodes} nodes; {lv}"


def _device(name: str, where: str) -> Any:
    from clustersim.hardware import get_device

    try:
        return get_device(name)
    except ClusterSimError as exc:
        raise TopologyError(f"{where}: {exc}") from None


def _undisclosed(name: str, where: str) -> None:
    """Check ``name`` may stand for an undisclosed device (not a catalogue name)."""
    from clustersim.hardware import get_device

    if not name or any(c.isspace() for c in name):
        raise TopologyError(f"{where}: an undisclosed device needs a name without spaces")
    try:
        spec = get_device(name)
    except ClusterSimError:
        return
    raise TopologyError(
        f"{where}: '{name}' is the catalogue device '{spec.name}'; drop 'undisclosed: true'"
    )


def _apply_links(
    raw: Any, levels: list[Level], n_nodes: int, link_bw: dict[int, np.ndarray], source: str
) -> None:
    """Per-node link exceptions: ``links: [{node: 3, level: leaf, bandwidth: 25.0e9}]``."""
    if raw is None:
        return
    if not isinstance(raw, list):
        raise TopologyError(f"{source}: 'links' must be a list of {{node, level, bandwidth}}")
    names = [lv.name for lv in levels]
    for i, item in enumerate(raw):
        where = f"{source}: links[{i}]"
        if not isinstance(item, dict):
            raise TopologyError(f"{where}: expected a mapping like {{node: 3, level: leaf, ...}}")
        for key in item:
            if key not in ("node", "level", "bandwidth"):
                raise TopologyError(
                    f"{where}: unknown key '{key}' (allowed: bandwidth, level, node)"
                )
        node = item.get("node")
        if isinstance(node, bool) or not isinstance(node, int):
            raise TopologyError(f"{where}.node: must be a node index, got {node!r}")
        if not 0 <= node < n_nodes:
            raise TopologyError(
                f"{where}.node: link to unknown node {node} (the topology has nodes "
                f"0..{n_nodes - 1})"
            )
        lname = str(item.get("level", ""))
        if lname not in names:
            raise TopologyError(
                f"{where}.level: unknown level '{lname}' (levels: {', '.join(names)})"
            )
        lvl = names.index(lname)
        bw = _pos_float(item.get("bandwidth"), f"{where}.bandwidth")
        arr = link_bw.get(lvl)
        if arr is None:
            arr = np.full(n_nodes, levels[lvl].bandwidth, dtype=np.float64)
            link_bw[lvl] = arr
        arr[node] = bw


def _pos_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TopologyError(f"{where}: must be a positive whole number, got {value!r}")
    return value


def _pos_float(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TopologyError(f"{where}: must be a number, got {value!r}") from None
    if not v > 0:
        raise TopologyError(f"{where}: must be > 0, got {value!r}")
    return v


def _nonneg_float(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TopologyError(f"{where}: must be a number, got {value!r}") from None
    if v < 0:
        raise TopologyError(f"{where}: must be >= 0, got {value!r}")
    return v


def build_cluster(scenario: Any) -> Cluster:
    """The :class:`Cluster` a scenario describes."""
    c = scenario.cluster
    if c.topology is not None:
        path = scenario.resolve_path(c.topology)
        return Cluster.from_yaml(path)
    return Cluster.uniform(c.nodes, c.gpus_per_node, c.device)
