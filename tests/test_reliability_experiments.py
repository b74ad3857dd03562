"""The three reliability experiments run in --quick mode and write what they promise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"exp_{name}", EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(name: str, out: Path) -> dict:  # type: ignore[type-arg]
    assert _load(name).main(["--out", str(out), "--quick"]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_llama3_interruptions_quick(tmp_path: Path) -> None:
    s = _run("llama3_interruptions", tmp_path)
    # order of magnitude of the published 419 unexpected interruptions, ETTR near 90 %
    assert 419 / 3 <= s["unexpected_interruptions"] <= 419 * 3
    assert 0.7 <= s["ettr"] <= 0.97
    fr = s["lost_time_breakdown"]["fractions"]
    assert sum(fr.values()) == pytest.approx(1.0)
    circ = s["variants"]["Llama 3 Table 5 rates (circular)"]["interruptions"]["mean"]
    assert 397 * 0.85 <= circ <= 397 * 1.15
    for png in ("breakdown.png", "timeline.png", "interruptions_by_cause.png"):
        assert (tmp_path / png).stat().st_size > 10_000


@pytest.mark.slow
def test_ettr_vs_scale_quick(tmp_path: Path) -> None:
    s = _run("ettr_vs_scale", tmp_path)
    sizes = [k for k in s if k.isdigit()]
    assert sizes == ["1024", "16384", "100000"]
    for k in sizes:
        assert s[k]["fast_ettr"] > s[k]["baseline_ettr"]
    assert s["1024"]["baseline_ettr"] > s["100000"]["baseline_ettr"]
    assert (tmp_path / "ettr_vs_size.png").stat().st_size > 10_000


@pytest.mark.slow
def test_checkpoint_interval_quick(tmp_path: Path) -> None:
    s = _run("checkpoint_interval", tmp_path)
    for case in s["cases"].values():
        assert 0.7 <= case["ratio_measured_to_young"] <= 1.3
    assert (tmp_path / "interval_sweep.png").stat().st_size > 10_000
