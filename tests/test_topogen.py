"""Topology generator, the topology library in topologies/, and topology file errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from clustersim import topogen as tg
from clustersim.errors import ConfigError, TopologyError
from clustersim.state import ClusterState
from clustersim.topology import Cluster

REPO = Path(__file__).resolve().parents[1]
TOPOLOGIES = REPO / "topologies"


def levels(c: Cluster) -> list[tuple[str, int, float, bool]]:
    return [(lv.name, lv.nodes, lv.bandwidth, lv.scale_up) for lv in c.levels]


# --------------------------------------------------------------------------- generator


def test_fat_tree_two_tiers_rail_optimised() -> None:
    c = tg.build(tg.fat_tree(1024))  # 128 nodes; radix 64 -> leaf = 32 nodes
    assert c.num_devices == 1024 and c.num_nodes == 128
    assert levels(c) == [
        ("node", 1, 450e9, True),
        ("leaf", 32, 50e9, False),
        ("spine", 128, 50e9, False),
    ]
    assert c.scale_up_top == 0


def test_fat_tree_top_of_rack_and_oversubscription() -> None:
    c = tg.build(tg.fat_tree(1024, rail_optimized=False, oversubscription=2))
    assert [lv.nodes for lv in c.levels] == [1, 4, 128]  # 32 ports / 8 NICs = 4 nodes per ToR
    assert c.levels[2].bandwidth == 25e9


def test_fat_tree_three_tiers_llama3_style() -> None:
    # > radix x leaf = 2048 nodes: pods of 32 leaf groups (1,024 nodes), 1:7 between pods
    c = tg.build(tg.fat_tree(32_768, oversubscription=(1, 7)))
    assert [(lv.name, lv.nodes) for lv in c.levels] == [
        ("node", 1),
        ("leaf", 32),
        ("pod", 1024),
        ("core", 4096),
    ]
    assert c.levels[3].bandwidth == pytest.approx(50e9 / 7)
    assert c.levels[2].bandwidth == 50e9


def test_hundred_thousand_devices_build_in_seconds() -> None:
    t0 = time.perf_counter()
    spec = tg.fat_tree(100_000)
    c = tg.build(spec)
    state = ClusterState(c)
    elapsed = time.perf_counter() - t0
    assert c.num_devices == 100_000 and state.free_total == 100_000
    assert spec.get("allow_partial") is True  # 12,500 nodes: the last pod is partly populated
    assert elapsed < 5.0
    t0 = time.perf_counter()
    sn = tg.build(tg.supernode_cluster(99_840, domain=384, device="Ascend910C"))
    assert sn.num_devices == 99_840 and sn.scale_up_top == 1
    assert time.perf_counter() - t0 < 5.0


def test_supernode_cluster_levels() -> None:
    c = tg.build(tg.supernode_cluster(576, domain=72, gpus_per_node=4, device="GB200"))
    assert levels(c) == [
        ("node", 1, 900e9, True),
        ("supernode", 18, 900e9, True),
        ("spine", 144, 50e9, False),
    ]
    assert c.scale_up_top == 1
    cm = tg.build(
        tg.supernode_cluster(
            1536, domain=384, device="Ascend910C", domain_bandwidth=392e9 * 0.97, leaf_domains=2
        )
    )
    assert [(lv.name, lv.nodes) for lv in cm.levels] == [
        ("node", 1),
        ("supernode", 48),
        ("leaf", 96),
        ("spine", 192),
    ]
    assert cm.levels[1].bandwidth == pytest.approx(380.24e9)
    one = tg.build(tg.supernode_cluster(512, domain=512, device="KunlunP800"))
    assert [lv.name for lv in one.levels] == ["node", "supernode"]


def test_rail_only_and_generic_fabric() -> None:
    c = tg.build(tg.rail_only(256))
    assert [(lv.name, lv.nodes) for lv in c.levels] == [("node", 1), ("rail", 32)]
    spec = tg.fabric(
        "custom",
        12,
        8,
        "H100",
        [tg.Tier("rack", 4, 50e9, 2e-6), tg.Tier("row", 8, 25e9, 3e-6, oversubscription=2)],
    )
    c2 = tg.build(spec)  # the top tier is widened to span all 12 nodes
    assert [lv.nodes for lv in c2.levels] == [1, 4, 12]
    assert c2.levels[2].bandwidth == 12.5e9 and "allow_partial" not in spec


def test_generator_errors() -> None:
    with pytest.raises(ConfigError, match="not a multiple of 8 devices per node"):
        tg.fat_tree(1001)
    with pytest.raises(ConfigError, match="radix must be an even number"):
        tg.fat_tree(64, radix=7)
    with pytest.raises(ConfigError, match="domain must be a multiple"):
        tg.supernode_cluster(64, domain=12)
    with pytest.raises(ConfigError, match="must be a multiple of the tier below"):
        tg.fabric("x", 8, 8, "H100", [tg.Tier("a", 4, 1e9, 0), tg.Tier("b", 6, 1e9, 0)])


def test_yaml_round_trip(tmp_path: Path) -> None:
    spec = tg.supernode_cluster(1152, domain=384, device="Ascend910C")
    text = tg.to_yaml(spec, ["generated for a test"])
    assert text.startswith("# generated for a test\n")
    p = tmp_path / "t.yaml"
    p.write_text(text)
    a, b = Cluster.from_yaml(p), tg.build(spec)
    assert levels(a) == levels(b) and a.node_type == b.node_type


# --------------------------------------------------------------------------- library

# file -> (devices, nodes, scale-up top level, per-device bandwidth by level (GB/s))
LIBRARY: dict[str, tuple[int, int, int, list[float]]] = {
    "dgx-h100.yaml": (1024, 128, 0, [450, 50, 50]),
    "gb200-nvl72.yaml": (576, 144, 1, [900, 900, 50]),
    "cloudmatrix384.yaml": (384, 48, 1, [392, 380.24]),
    "kunlun-p800-512.yaml": (512, 64, 1, [200, 200]),
    "philly.yaml": (512, 64, 0, [150, 1.5625, 0.625]),
    "alibaba-openb.yaml": (6212, 1213, 0, [31.5076923, 12.5]),  # first group: A10 (PCIe 4)
}


def test_every_library_file_is_checked() -> None:
    assert sorted(p.name for p in TOPOLOGIES.glob("*.yaml")) == sorted(LIBRARY)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_topology_loads(name: str) -> None:
    path = TOPOLOGIES / name
    text = path.read_text()
    assert text.startswith("#"), f"{name} needs a header comment citing its figures"
    assert "[S]" in text or "[P]" in text or "[U]" in text
    c = Cluster.from_yaml(path)
    devices, nodes, top, bw = LIBRARY[name]
    assert (c.num_devices, c.num_nodes, c.scale_up_top) == (devices, nodes, top)
    assert [lv.bandwidth / 1e9 for lv in c.levels] == pytest.approx(bw)
    c.graph()  # builds


def test_openb_topology_matches_the_trace() -> None:
    csv = (
        REPO.parent
        / "shared"
        / "traces"
        / "alibaba-gpu-2023-openb"
        / "openb_node_list_gpu_node.csv"
    )
    if not csv.exists():
        pytest.skip(f"needs {csv} (the real traces in ../shared beside the repo); not present")
    spec = tg.openb_topology(csv)
    shipped = yaml.safe_load((TOPOLOGIES / "alibaba-openb.yaml").read_text())
    assert spec == shipped
    c = tg.build(spec)
    assert c.num_devices == 6212 and c.num_nodes == 1213  # FGD paper / literature.md §5.1
    per_type: dict[str, int] = {}
    for t, s in zip(c.node_type, c.node_size, strict=True):
        per_type[t] = per_type.get(t, 0) + s
    assert per_type["G2"] == 549 * 8 and per_type["T4"] == 387 * 2 + 17 * 4
    g2 = c.node_type.index("G2")
    assert c.node_bandwidth(0)[g2] == pytest.approx(tg.PCIE3_X16)
    assert c.node_bandwidth(0)[c.node_type.index("V100")] == pytest.approx(150e9)


# --------------------------------------------------------------------------- file errors

GOOD: dict[str, Any] = {
    "name": "t",
    "nodes": [{"count": 4, "gpus": 8, "device": "H100"}],
    "node_link": {"bandwidth": 450e9},
    "levels": [
        {"name": "sn", "nodes": 2, "bandwidth": 400e9, "scale_up": True},
        {"name": "spine", "nodes": 4, "bandwidth": 50e9},
    ],
}


def load(tmp_path: Path, data: dict[str, Any]) -> Cluster:
    p = tmp_path / "bad-topo.yaml"
    p.write_text(yaml.safe_dump(data))
    return Cluster.from_yaml(p)


def test_good_file_and_links(tmp_path: Path) -> None:
    c = load(tmp_path, {**GOOD, "links": [{"node": 2, "level": "spine", "bandwidth": 25e9}]})
    assert c.scale_up_top == 1 and not c.uniform_links
    assert c.node_bandwidth(2).tolist() == [50e9, 50e9, 25e9, 50e9]
    assert c.node_bandwidth(0).tolist() == [450e9] * 4
    g = c.graph()
    assert g.edges[("node", 2), ("sn", 1)]["bandwidth"] == 400e9


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            {"links": [{"node": 7, "level": "spine", "bandwidth": 1e9}]},
            "links[0].node: link to unknown node 7 (the topology has nodes 0..3)",
        ),
        (
            {"links": [{"node": 1, "level": "core", "bandwidth": 1e9}]},
            "links[0].level: unknown level 'core' (levels: node, sn, spine)",
        ),
        (
            {"links": [{"node": 1, "level": "sn", "bandwidth": 0}]},
            "links[0].bandwidth: must be > 0",
        ),
        (
            {"levels": [{"name": "sn", "nodes": 2, "bandwidth": 0, "scale_up": True}]},
            "level 'sn'.bandwidth: must be > 0",
        ),
        (
            {
                "levels": [
                    {"name": "rack", "nodes": 4, "bandwidth": 1e9},
                    {"name": "row", "nodes": 2, "bandwidth": 1e9},
                ]
            },
            "level 'row': groups of 2 nodes are smaller than the level below ('rack', 4 nodes)",
        ),
        (
            {
                "levels": [
                    {"name": "leaf", "nodes": 2, "bandwidth": 1e9},
                    {"name": "sn", "nodes": 4, "bandwidth": 1e9, "scale_up": True},
                ]
            },
            "level 'sn': marked scale_up but the level below ('leaf') is scale-out",
        ),
        ({"node_link": {"bandwidth": 0}}, "node_link.bandwidth: must be > 0"),
        (
            {
                "nodes": [{"count": 4, "gpus": 8, "device": "G2", "undisclosed": True}],
                "node_link": {},
            },
            "nodes[0]: device 'G2' is undisclosed",
        ),
        (
            {"nodes": [{"count": 4, "gpus": 8, "device": "H100", "undisclosed": True}]},
            "'H100' is the catalogue device 'H100'",
        ),
        (
            {"nodes": [{"count": 4, "gpus": 8, "device": "H100", "colour": "red"}]},
            "nodes[0]: unknown key 'colour'",
        ),
        (
            {"nodes": [{"count": 5, "gpus": 8, "device": "H100"}]},
            "level 'sn' groups 2 nodes, which does not divide the 5 nodes",
        ),
    ],
)
def test_errors_name_file_and_element(tmp_path: Path, change: dict[str, Any], needle: str) -> None:
    data = {**GOOD, **change}
    if "nodes" in change and change["nodes"][0]["count"] == 5:
        data["levels"] = [
            {"name": "sn", "nodes": 2, "bandwidth": 400e9, "scale_up": True},
            {"name": "spine", "nodes": 6, "bandwidth": 50e9},
        ]
    with pytest.raises(TopologyError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "bad-topo.yaml" in msg and needle in msg, msg


def test_partial_last_group_when_allowed(tmp_path: Path) -> None:
    data = {
        **GOOD,
        "nodes": [{"count": 5, "gpus": 8, "device": "H100"}],
        "allow_partial": True,
        "levels": [
            {"name": "sn", "nodes": 2, "bandwidth": 400e9, "scale_up": True},
            {"name": "spine", "nodes": 6, "bandwidth": 50e9},
        ],
    }
    c = load(tmp_path, data)
    assert c.group_of[1].tolist() == [0, 0, 1, 1, 2]


def test_heterogeneous_groups_get_their_own_links(tmp_path: Path) -> None:
    data = {
        "nodes": [
            {"count": 2, "gpus": 8, "device": "H100"},
            {"count": 2, "gpus": 2, "device": "T4"},
            {"count": 1, "gpus": 8, "device": "G2", "undisclosed": True, "link_bandwidth": 10e9},
        ],
        "levels": [{"name": "fabric", "nodes": 5, "bandwidth": 12.5e9}],
    }
    c = load(tmp_path, data)
    assert c.node_type == ["H100", "H100", "T4", "T4", "G2"]
    bw = c.node_bandwidth(0)
    assert bw[0] == 450e9 and bw[4] == 10e9
    assert bw[2] == pytest.approx(8e9 * 16 * 128 / 130 / 8)
    assert np.all(c.node_bandwidth(1) == 12.5e9)
