"""Experiment scripts run their points through clustersim.sweep: resumable and deterministic.

For four experiments (checkpoint_interval, llama3_interruptions, power_cap, pooling_savings): a
second run into the same folder computes nothing (``run_point`` is replaced by a function that
fails, so a recomputed point would fail the run) and writes a byte-identical ``summary.json``; a
point deleted from the store is the only one recomputed; a fresh run in another folder
(here on two local worker processes) gives the same numbers (all but the measured timings).
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"
OPENB = TRACES / "alibaba-gpu-2023-openb"
CKPT_ARGS = ["--quick", "--days", "2", "--seeds", "1"]
LLAMA_ARGS = ["--quick", "--seeds", "1"]
TIMING_KEYS = {"runtime_s", "sim_seconds_per_run", "sim_seconds", "wall_seconds", "search_wall_s"}


def _module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module(f"experiments.{name}")


def _no_compute(params: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError(f"point recomputed: {params}")


def _drop_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    return obj


def _run_main(mod: ModuleType, argv: list[str]) -> None:
    """Run ``mod.main``: scripts return 0 or (hetero/power/economics ones) their summary."""
    res = mod.main(argv)
    assert res == 0 or (isinstance(res, dict) and res), res


def _runs(out: Path) -> dict[str, bytes]:
    """Every stored point's run.json (its finish time changes if it is recomputed)."""
    return {p.parent.name: p.read_bytes() for p in (out / "points" / "runs").glob("*/run.json")}


@pytest.mark.parametrize(
    ("name", "args", "n_points"),
    [
        ("checkpoint_interval", CKPT_ARGS, 14),  # 2 storages x 7 intervals x 1 seed
        ("llama3_interruptions", LLAMA_ARGS, 4),  # 4 rate sources x 1 seed
        pytest.param(
            "power_cap",
            ["--quick"],
            4,  # 2 caps x 2 mechanisms (wait, throttle)
            marks=pytest.mark.skipif(
                not OPENB.exists(), reason="needs ../shared/traces/alibaba-gpu-2023-openb"
            ),
        ),
        pytest.param(
            "pooling_savings",
            ["--quick"],
            10,  # 5 policies (dedicated + 4 pooled) x 2 scopes (market, cold tail)
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(not TRACES.exists(), reason="needs ../shared/traces"),
            ],
        ),
    ],
)
def test_second_run_reuses_every_point(
    name: str, args: list[str], n_points: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _module(name, monkeypatch)
    out = tmp_path / "a"
    _run_main(mod, ["--out", str(out), *args])
    first = (out / "summary.json").read_bytes()
    runs = _runs(out)
    assert len(runs) == n_points
    manifest = json.loads((out / "points" / "sweep.json").read_text())
    assert manifest["spec"]["function"] == f"experiments.{name}:run_point"
    assert len(manifest["points"]) == n_points

    monkeypatch.setattr(mod, "run_point", _no_compute)
    _run_main(mod, ["--out", str(out), *args])
    assert (out / "summary.json").read_bytes() == first
    assert _runs(out) == runs  # no point folder was rewritten

    # a lost point (e.g. a run killed before it stored it) is the only one recomputed
    monkeypatch.undo()
    mod = _module(name, monkeypatch)
    victim = sorted(runs)[0]
    shutil.rmtree(out / "points" / "runs" / victim)
    calls: list[dict[str, Any]] = []
    real = mod.run_point

    def counting(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(params)
        return real(params)  # type: ignore[no-any-return]

    monkeypatch.setattr(mod, "run_point", counting)
    _run_main(mod, ["--out", str(out), *args])
    assert len(calls) == 1
    again = json.loads((out / "summary.json").read_text())
    assert _drop_timings(again) == _drop_timings(json.loads(first))


def test_fresh_run_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module("checkpoint_interval", monkeypatch)
    a, b = tmp_path / "a", tmp_path / "b"
    assert mod.main(["--out", str(a), *CKPT_ARGS]) == 0
    # the second in two spawned worker processes: they import experiments.<name> themselves
    assert mod.main(["--out", str(b), *CKPT_ARGS, "--executor", "local", "--workers", "2"]) == 0
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["runtime_s"] > 0
    assert _drop_timings(sa) == _drop_timings(sb)
    # same run ids (folder names), same per-point results but for the measured time
    names = sorted(f.name for f in (a / "points" / "runs").iterdir())
    assert names == sorted(f.name for f in (b / "points" / "runs").iterdir())
    for name in names:
        pa, pb = (
            json.loads((d / "points" / "runs" / name / "summary.json").read_text()) for d in (a, b)
        )
        assert pa["sim_seconds"] > 0
        assert _drop_timings(pa) == _drop_timings(pb)


def test_failed_point_is_reported_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _module("llama3_interruptions", monkeypatch)
    real = mod.run_point

    def flaky(params: dict[str, Any]) -> dict[str, Any]:
        if params["variant"] == "Meta RSC-1 r_f":
            raise ValueError("injected failure")
        return real(params)  # type: ignore[no-any-return]

    monkeypatch.setattr(mod, "run_point", flaky)
    out = tmp_path / "x"
    with pytest.raises(RuntimeError, match=r"1 of 4 points failed(.|\n)*injected failure"):
        mod.main(["--out", str(out), *LLAMA_ARGS])
    assert len(_runs(out)) == 3 and not (out / "summary.json").exists()
    calls: list[str] = []

    def counting(params: dict[str, Any]) -> dict[str, Any]:
        calls.append(params["variant"])
        return real(params)  # type: ignore[no-any-return]

    monkeypatch.setattr(mod, "run_point", counting)
    assert mod.main(["--out", str(out), *LLAMA_ARGS]) == 0
    assert calls == ["Meta RSC-1 r_f"]
    assert json.loads((out / "summary.json").read_text())["ettr"] > 0
