"""Architecture rules, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "clustersim"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_only_engine_imports_simpy() -> None:
    offenders = [
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if p.name != "engine.py" and any(m.split(".")[0] == "simpy" for m in imports(p))
    ]
    assert offenders == []
    assert "simpy" in imports(SRC / "engine.py")


def test_only_the_serving_fast_path_imports_numba() -> None:
    fast = SRC / "serving" / "fastpath.py"
    offenders = [
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if p != fast and any(m.split(".")[0] == "numba" for m in imports(p))
    ]
    assert offenders == []
    assert any(m.split(".")[0] == "numba" for m in imports(fast))


def test_schedulers_never_import_engine_or_simpy() -> None:
    for p in (SRC / "schedulers").rglob("*.py"):
        mods = imports(p)
        assert not any(
            m in ("clustersim.engine", "simpy") or m.startswith("simpy.") for m in mods
        ), p


def test_engine_never_imports_plots() -> None:
    assert not any("plots" in m or "matplotlib" in m for m in imports(SRC / "engine.py"))


def test_every_module_has_a_docstring() -> None:
    missing = [
        p.relative_to(SRC)
        for p in SRC.rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


def test_a_plain_run_imports_only_what_it_uses() -> None:
    # start-up is part of the whole-process speed: running a homogeneous scenario must not
    # pull in the heterogeneous policies, the reliability simulator, YAML or plotting
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from clustersim.api import simulate\n"
        "from clustersim.config import validate_scenario\n"
        "sc = validate_scenario({'name': 'x', 'cluster': {'nodes': 1, 'gpus_per_node': 2,"
        " 'device': 'V100'}, 'workload': {'format': 'synthetic', 'synthetic': {'jobs': 5,"
        " 'gpu_mix': {1: 1.0}}},"
        " 'scheduler': {'name': 'fifo_backfill'}})\n"
        "simulate(sc)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    env = {"PYTHONPATH": str(SRC.parent), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    loaded = set(out.stdout.split())
    assert "clustersim.engine" in loaded and "clustersim.reliability.failures" in loaded
    for heavy in (
        "clustersim.schedulers.hetero_policies",
        "clustersim.reliability.sim",
        "clustersim.reliability.recovery",
        "yaml",
        "matplotlib",
    ):
        assert heavy not in loaded, heavy


def test_reliability_exports_resolve_lazily() -> None:
    import clustersim.reliability as rel

    for name in rel.__all__:
        assert getattr(rel, name) is not None, name
    assert set(rel.__all__) <= set(dir(rel))
