"""Registry: built-ins by name, unknown names with a hint, and outside packages via entry points."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clustersim.errors import ConfigError, UnknownNameError
from clustersim.schedulers import registry


def test_builtins_registered() -> None:
    names = registry.scheduler_names()
    for n in ("fifo", "fifo_backfill", "sjf", "srtf", "las"):
        assert n in names


def test_unknown_name_hint() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'fifo_backfill'"):
        registry.get_scheduler("fifo_backfil")


def test_bad_params_name_the_policy() -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.params for 'fifo'"):
        registry.create_scheduler("fifo", {"depth": 3})
    with pytest.raises(ConfigError, match=r"las\.thresholds"):
        registry.create_scheduler("las", {"thresholds": [10, 5]})


def test_entry_point_from_outside_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "outside_pol"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from clustersim.schedulers import Scheduler, Start\n"
        "class Lifo(Scheduler):\n"
        "    def schedule(self, view):\n"
        "        for job in reversed(list(view.queue)):\n"
        "            d = view.place(job)\n"
        "            if d is None:\n"
        "                return\n"
        "            yield Start(job.id, d)\n"
    )
    dist = tmp_path / "outside_pol-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-pol\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clustersim.schedulers]\nlifo = outside_pol:Lifo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        cls = registry.get_scheduler("lifo")
        assert cls.__name__ == "Lifo" and cls.name == "lifo"
        from conftest import run_engine

        res = run_engine([(0, 1, 10), (1, 1, 5), (2, 1, 1)], 1, 1, "lifo")
        ends = {r.id: r.end for r in res.records}
        assert ends == {"j0": 10.0, "j2": 11.0, "j1": 16.0}  # last in, first out
    finally:
        registry.SCHEDULERS.pop("lifo", None)
        sys.modules.pop("outside_pol", None)
