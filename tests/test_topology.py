"""Topologies: hierarchy, networkx graph, and errors naming the file and the element."""

from __future__ import annotations

from pathlib import Path

import pytest

from clustersim.errors import TopologyError
from clustersim.topology import Cluster

GOOD = """\
name: two-racks
nodes:
  - {count: 4, gpus: 8, device: H100}
  - {count: 4, gpus: 4, device: A100}
node_link: {name: nvlink, bandwidth: 450.0e9, latency: 1.0e-6}
levels:
  - {name: rack, nodes: 4, bandwidth: 50.0e9, latency: 2.0e-6}
  - {name: spine, nodes: 8, bandwidth: 50.0e9, oversubscription: 2}
"""


def load(tmp_path: Path, text: str) -> Cluster:
    p = tmp_path / "topo.yaml"
    p.write_text(text)
    return Cluster.from_yaml(p)


def test_hierarchy(tmp_path: Path) -> None:
    c = load(tmp_path, GOOD)
    assert c.num_devices == 48 and c.num_nodes == 8
    assert c.device_types == ["A100", "H100"]
    assert c.levels[2].bandwidth == 25e9  # oversubscription 2
    assert c.common_level([0, 1]) == 0
    assert c.common_level([0, 8]) == 1
    assert c.common_level([0, 40]) == 2
    g = c.graph()
    assert g.number_of_nodes() == 48 + 8 + 2 + 1
    assert g.edges[("device", 0), ("node", 0)]["bandwidth"] == 450e9
    assert g.edges[("node", 5), ("rack", 1)]["bandwidth"] == 50e9


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        (
            "bandwidth: 50.0e9, latency",
            "bandwidth: 0, latency",
            "level 'rack'.bandwidth: must be > 0",
        ),
        ("{name: rack, nodes: 4", "{name: rack, nodes: 16", "smaller than the level below"),
        ("device: A100", "device: A1000", "nodes[1].device: unknown device 'A1000'"),
        ("{name: spine, nodes: 8", "{name: spine, nodes: 6", "not a multiple"),
        ("count: 4, gpus: 8", "count: 4, gpus: 0", "nodes[0].gpus: must be a positive"),
        ("name: two-racks", "nam: two-racks", "unknown key 'nam'"),
    ],
)
def test_errors_name_file_and_element(tmp_path: Path, old: str, new: str, needle: str) -> None:
    with pytest.raises(TopologyError) as ei:
        load(tmp_path, GOOD.replace(old, new))
    assert "topo.yaml" in str(ei.value) and needle in str(ei.value)


def test_top_level_must_span_all(tmp_path: Path) -> None:
    text = GOOD.replace("  - {name: spine, nodes: 8, bandwidth: 50.0e9, oversubscription: 2}\n", "")
    with pytest.raises(TopologyError, match="spans 4 nodes but the cluster has 8"):
        load(tmp_path, text)


def test_uniform() -> None:
    c = Cluster.uniform(3, 8, "h100")
    assert c.num_devices == 24 and c.node_type == ["H100"] * 3
    assert list(c.node_devices(2)) == list(range(16, 24))
