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
