"""Scenario loading: clear errors naming file, line and field; the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from clustersim.config import load_scenario, scenario_to_yaml, validate_scenario
from clustersim.errors import ConfigError

GOOD = """\
name: philly-fifo
seed: 0
cluster: {nodes: 10, gpus_per_node: 8, device: V100, network: ideal}
workload: {trace: traces/philly-sample.csv, format: csv}
scheduler: {name: fifo, params: {}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "scenario.yaml"
    p.write_text(text)
    return p


def test_issue_minimum_shape_loads(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.cluster.nodes == 10 and sc.scheduler.name == "fifo"
    assert sc.base_dir == str(tmp_path.resolve())


def test_unknown_key_gets_did_you_mean_and_line(tmp_path: Path) -> None:
    text = GOOD.replace(
        "scheduler: {name: fifo, params: {}}", "scheduler:\n  name: fifo\n  parms: {}"
    )
    with pytest.raises(ConfigError) as ei:
        load_scenario(write(tmp_path, text))
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / 'scenario.yaml'}:7: scheduler.parms: unknown key 'parms'")
    assert "did you mean 'params'?" in msg


def test_bad_value_names_field_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("nodes: 10", "nodes: -3")
    with pytest.raises(ConfigError, match=r"scenario.yaml:3: cluster.nodes: .*greater than 0"):
        load_scenario(write(tmp_path, text))


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scenario.yaml:3: malformed YAML"):
        load_scenario(write(tmp_path, "name: x\ncluster: {nodes: 1\nseed: [\n"))


def test_missing_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"workload: missing required field"):
        load_scenario(write(tmp_path, "name: x\ncluster: {nodes: 1, gpus_per_node: 1}\n"))


def test_cluster_shape_exclusive(tmp_path: Path) -> None:
    text = GOOD.replace("network: ideal}", "network: ideal, topology: t.yaml}")
    with pytest.raises(ConfigError, match="exclusive"):
        load_scenario(write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario("/nonexistent/scenario.yaml")


def test_embedded_default_and_roundtrip() -> None:
    sc = load_scenario(None)
    assert sc.workload.format == "csv" and sc.resolve_path(sc.workload.trace or "").exists()
    again = validate_scenario(__import__("yaml").safe_load(scenario_to_yaml(sc)))
    assert again == sc


def test_overrides_are_validated() -> None:
    sc = load_scenario(None)
    assert sc.with_overrides({"scheduler.name": "las", "seed": 3}).seed == 3
    with pytest.raises(ConfigError, match="seed"):
        sc.with_overrides({"seed": -1})
