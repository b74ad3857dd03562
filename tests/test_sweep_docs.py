"""The committed scenario/sweep reference page matches the pydantic models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scenario_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_schema_doc", REPO / "tools" / "gen_schema_doc.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = (REPO / "docs" / "scenario-reference.md").read_text()
    assert committed == mod.render(), (
        "docs/scenario-reference.md is stale: run python tools/gen_schema_doc.py"
    )
    for key in ("`workload.load_scale`", "`scheduler.name`", "`grid`", "`seeds`"):
        assert key in committed
