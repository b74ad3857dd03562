"""experiments/pool_window.py: window and parameter parsing (the replay itself is in the docs)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pw(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("experiments.pool_window")


def test_window_from_clock_time_or_index(pw: ModuleType) -> None:
    assert pw._window("20:10", 600.0) == 121  # 72,600 s / 600 s
    assert pw._window("22:25", 600.0) == 134  # inside the 22:20 window
    assert pw._window("7", 600.0) == 7


def test_policy_parameters_are_literals_or_words(pw: ModuleType) -> None:
    kw = pw._kw(["scale_out_at=8", "staffing=proportional", "margin=0.8", "prefetch=False"])
    assert kw == {"scale_out_at": 8, "staffing": "proportional", "margin": 0.8, "prefetch": False}


def test_worker_breakdown_weights_by_devices_and_lifetime(pw: ModuleType) -> None:
    from types import SimpleNamespace as Ns

    nan = float("nan")
    res = Ns(
        horizon=100.0,
        instances=[
            # a TP2 prefill worker alive for the whole run, busy 80 s, loading 10 s
            Ns(kind="prefill", tp=2, created=0.0, stopped=nan, busy=80.0, load_time=10.0),
            # a TP2 prefill worker alive 50 s, busy 10 s
            Ns(kind="prefill", tp=2, created=20.0, stopped=70.0, busy=10.0, load_time=0.0),
            Ns(kind="decode", tp=1, created=0.0, stopped=nan, busy=25.0, load_time=5.0),
        ],
    )
    rows = pw.worker_breakdown(res)
    assert rows[0] == ("decode", 1, 1, 1, 0.25, 0.05)
    kind, tp, n, dev, busy, load = rows[1]
    assert (kind, tp, n, dev) == ("prefill", 2, 2, 4)
    assert busy == pytest.approx((80 * 2 + 10 * 2) / (100 * 2 + 50 * 2))  # 0.6
    assert load == pytest.approx(20 / 300)
