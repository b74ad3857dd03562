"""The two serving experiments run end to end in ``--quick`` mode (needs ../shared/traces)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
pytestmark = [
    pytest.mark.shared,
    pytest.mark.slow,
    pytest.mark.skipif(not TRACES.exists(), reason=f"public traces not found at {TRACES}"),
]


def _run(script: str, out: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / script), "--out", str(out), "--quick", *extra],
        check=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )
    return json.loads((out / "summary.json").read_text())


def test_model_market_waste_quick(tmp_path: Path) -> None:
    s = _run("model_market_waste.py", tmp_path, "--processes", "1")
    assert s["gpus_total"] > s["n_models"]  # >= 1 instance per model, more for hot ones
    assert 0 < s["cold_request_share"] < s["cold_gpu_share"] < 1  # the tail is over-served
    assert s["replayed_window"]["requests"]["served"] > 0
    assert (tmp_path / "lorenz.png").stat().st_size > 10_000


def test_pooling_savings_quick(tmp_path: Path) -> None:
    s = _run("pooling_savings.py", tmp_path)
    pol = s["policies"]
    assert set(pol) == {"dedicated", "serverless", "multiplexed", "token_pooled", "hybrid_pooled"}
    assert s["market"]["market"] == "temporal"
    assert s["method"].startswith("dedicated: per-model load test on each model's own busiest")
    ded = pol["dedicated"]["gpus_needed"]
    assert ded > 0 and pol["dedicated"]["slo_attainment"] >= 0.99
    for p, r in pol.items():
        if r.get("gpus_needed"):
            assert r["slo_attainment"] >= 0.99, p
            assert r["gpus_needed"] <= ded, p
    assert (tmp_path / "gpus_needed.png").exists()
    # the cold tail (Aegaeon's cut: 94.1 % of 16 models -> 15) with exactly its requests
    tail = s["cold_tail"]
    assert tail["market"]["models"] == 15 and tail["market"]["scope"] == "cold_tail"
    assert set(tail["market"]["model_names"]) < {f"m{i:03d}" for i in range(16)}
    assert 0 < tail["request_share_of_market"] < 1
    tded = tail["policies"]["dedicated"]["gpus_needed"]
    assert tded >= 15  # >= 1 engine per tail model
    for p, r in tail["policies"].items():
        if r.get("gpus_needed"):
            assert r["slo_attainment"] >= 0.99 and r["gpus_needed"] <= tded, p
    assert tail["token_pooled_saving_vs_dedicated"] == pytest.approx(
        1 - tail["policies"]["token_pooled"]["gpus_needed"] / tded
    )
    assert (tmp_path / "cold_tail_gpus_needed.png").exists()
    assert s["token_pooled_saving_by_scope"] == {
        "market": s["token_pooled_saving_vs_dedicated"],
        "cold_tail": tail["token_pooled_saving_vs_dedicated"],
    }
