"""Power: device and node draw, facility PUE, site power caps, energy accounting.

This module owns:

* :class:`PowerModel` -- the facility power of a cluster as a function of which
  devices are allocated. Per device type: idle power ``idle_w`` and active power
  (the catalogue's ``tdp_w``, or a power limit ``power_limit_fraction * tdp_w``);
  per node a static overhead (CPUs, NICs, fans) of ``node_overhead_fraction`` x the
  TDP of its devices; everything multiplied by the site ``pue``::

      draw = pue * ( sum_nodes overhead_n
                     + sum_devices idle_d
                     + sum_devices (active_d - idle_d) * used_milli_d / 1000 )

  An allocated device is assumed to draw its active power (a conservative bound:
  the cap then holds whatever the job's real utilisation is); a fractional
  (``gpu_milli``) share draws that share of the dynamic part.
* :class:`PowerCap` -- a running draw kept as exact integer milli-device counters
  per device type, updated on allocate/release in O(k) for a k-device job and
  queried in O(T) for T device types (never a scan of the cluster):
  ``draw_w``, ``headroom_w``, ``delta_w``, ``fits``.
* Energy: :func:`integrate_power` (exact integral of a step series),
  :meth:`PowerModel.job_energy_j` (a job's energy, attribution rule below),
  :func:`draw_series_from_records` (the exact draw over time of a non-preemptive run
  rebuilt from its job records) and :class:`PowerSeries` (energy, peak, headroom).
* Power capping with a speed penalty: :func:`dvfs_speed_factor` and
  :func:`uniform_limit_fraction` (the device power limit that keeps the whole
  cluster under a cap at full load).

**Energy attribution.** A job on devices ``D`` with share ``m = gpu_milli/1000``
running ``s`` seconds is charged ``pue * s * sum_{d in D} m * (active_d + overhead_n(d)
/ size_n(d))``: its devices' full active power plus their share of the node overhead.
What no job is charged (idle devices and their node share) is the cluster's *idle
energy*.

Defaults (``docs/hetero-power-economics.md``): PUE 1.58 (Uptime Institute Global Data
Center Survey 2023 average [S]); node overhead 27.5 % of GPU TDP (midpoint of
literature.md §4.3's 25-30 % [D]); idle power = the catalogue's ``idle_w``.
Units: W, J, s (kWh only in names that say so).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clustersim.errors import ClusterSimError, ConfigError
from clustersim.hardware import DeviceSpec
from clustersim.topology import Cluster

__all__ = [
    "DEFAULT_NODE_OVERHEAD_FRACTION",
    "DEFAULT_PUE",
    "J_PER_KWH",
    "PowerCap",
    "PowerCapError",
    "PowerModel",
    "PowerSeries",
    "draw_series_from_records",
    "dvfs_speed_factor",
    "integrate_power",
    "uniform_limit_fraction",
]

DEFAULT_PUE = 1.58
"""Facility power / IT power: Uptime Institute Global Data Center Survey 2023 average [S]."""
DEFAULT_NODE_OVERHEAD_FRACTION = 0.275
"""Node overhead (CPU, NICs, fans) as a fraction of its GPUs' TDP: midpoint of the
25-30 % in literature.md §4.3 [D]."""
J_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour."""

FloatArray = npt.NDArray[np.float64]


class PowerCapError(ClusterSimError):
    """An allocation would push the facility draw above the power cap."""


class PowerModel:
    """Facility power of a cluster (formula in the module docstring).

    Args:
        cluster: the hardware; node types must all be keys of ``specs``.
        specs: device type -> spec (idle and TDP); see :func:`clustersim.hetero.resolve_specs`.
        pue: power usage effectiveness (>= 1).
        node_overhead_fraction: static node overhead as a fraction of its devices' TDP.
        power_limit_fraction: device power limit as a fraction of TDP (1 = no limit);
            an allocated device draws ``max(idle_w, fraction * tdp_w)``.
    """

    def __init__(
        self,
        cluster: Cluster,
        specs: Mapping[str, DeviceSpec],
        *,
        pue: float = DEFAULT_PUE,
        node_overhead_fraction: float = DEFAULT_NODE_OVERHEAD_FRACTION,
        power_limit_fraction: float = 1.0,
    ) -> None:
        if not (math.isfinite(pue) and pue >= 1.0):
            raise ConfigError(f"power: pue must be >= 1, got {pue!r}")
        if not (math.isfinite(node_overhead_fraction) and node_overhead_fraction >= 0):
            raise ConfigError(
                f"power: node_overhead_fraction must be >= 0, got {node_overhead_fraction!r}"
            )
        if not (0 < power_limit_fraction <= 1):
            raise ConfigError(
                f"power: power_limit_fraction must be in (0, 1], got {power_limit_fraction!r}"
            )
        missing = [t for t in cluster.device_types if t not in specs]
        if missing:
            raise ConfigError(
                f"power: no device spec for type(s) {', '.join(missing)}; pass them in specs"
            )
        self.cluster = cluster
        self.pue = float(pue)
        self.node_overhead_fraction = float(node_overhead_fraction)
        self.power_limit_fraction = float(power_limit_fraction)
        self.types: tuple[str, ...] = tuple(cluster.device_types)
        tix = {t: i for i, t in enumerate(self.types)}
        self.tdp_t: FloatArray = np.array([specs[t].tdp_w for t in self.types], dtype=np.float64)
        self.idle_t: FloatArray = np.array([specs[t].idle_w for t in self.types], dtype=np.float64)
        self.active_t: FloatArray = np.maximum(self.idle_t, power_limit_fraction * self.tdp_t)
        node_t = np.array([tix[t] for t in cluster.node_type], dtype=np.int64)
        sizes = np.asarray(cluster.node_size, dtype=np.int64)
        self.type_of_device: npt.NDArray[np.int64] = np.repeat(node_t, sizes)
        self._type_list: list[int] = [int(x) for x in self.type_of_device]
        self.devices_t: npt.NDArray[np.int64] = np.bincount(
            self.type_of_device, minlength=len(self.types)
        ).astype(np.int64)
        self.node_overhead_w: FloatArray = node_overhead_fraction * self.tdp_t[node_t] * sizes
        self.overhead_total_w = float(self.node_overhead_w.sum())
        """Static node overhead of the whole cluster (IT W)."""
        self._idle_total = float((self.idle_t * self.devices_t).sum())
        self.it_idle_w = self.overhead_total_w + self._idle_total
        """IT power with every device idle (W)."""
        self.dyn_t: FloatArray = self.active_t - self.idle_t
        """Per type: extra IT W of one fully allocated device."""
        self._dyn_list: list[float] = [float(x) for x in self.dyn_t]

    # ---------------------------------------------------------------- totals
    @property
    def idle_floor_w(self) -> float:
        """Facility draw with every device idle (W): no cap below it can ever hold."""
        return self.pue * self.it_idle_w

    @property
    def peak_w(self) -> float:
        """Facility draw with every device allocated (W)."""
        return self.draw_by_type([int(n) * 1000 for n in self.devices_t])

    def cap_w(self, fraction: float) -> float:
        """A cap at ``fraction`` of :attr:`peak_w`."""
        return fraction * self.peak_w

    # ---------------------------------------------------------------- draw
    def draw_by_type(self, used_milli_by_type: Sequence[int]) -> float:
        """Facility draw (W) when ``used_milli_by_type[t]`` milli-devices of type t are allocated.

        The one formula every draw in this module goes through, so a cap check and a
        recorded series give bit-identical numbers for the same state.
        """
        dyn = 0.0
        for t, u in enumerate(used_milli_by_type):
            if u:
                dyn += self._dyn_list[t] * u
        return self.pue * (self.it_idle_w + dyn / 1000.0)

    def used_by_type(self, devices: Iterable[int], milli: int) -> list[int]:
        """Milli-devices per type that allocating ``milli`` of each of ``devices`` adds."""
        out = [0] * len(self.types)
        tl = self._type_list
        for d in devices:
            out[tl[d]] += milli
        return out

    def draw_from_used(self, used: Sequence[int] | npt.ArrayLike) -> float:
        """Facility draw (W) from per-device used milli (e.g. ``ClusterState.used``); O(devices)."""
        u = np.asarray(used, dtype=np.int64)
        per_type = np.bincount(self.type_of_device, weights=u, minlength=len(self.types))
        return self.draw_by_type([round(float(x)) for x in per_type])

    def delta_w(self, devices: Iterable[int], milli: int = 1000) -> float:
        """Facility W that allocating ``milli`` of each of ``devices`` adds."""
        dyn = 0.0
        tl, dl = self._type_list, self._dyn_list
        for d in devices:
            dyn += dl[tl[d]]
        return self.pue * dyn * milli / 1000.0

    # ---------------------------------------------------------------- energy
    def job_power_w(self, devices: Sequence[int], milli: int = 1000) -> float:
        """Facility W attributed to a job (active power + node-overhead share, module doc)."""
        if not devices:
            return 0.0
        d = np.asarray(devices, dtype=np.int64)
        t = self.type_of_device[d]
        node = self.cluster.node_of[d]
        sizes = np.asarray(self.cluster.node_size, dtype=np.float64)
        per_dev = self.active_t[t] + self.node_overhead_w[node] / sizes[node]
        return self.pue * float(per_dev.sum()) * milli / 1000.0

    def job_energy_j(self, devices: Sequence[int], milli: int, seconds: float) -> float:
        """Energy (J) attributed to a job holding ``devices`` for ``seconds``."""
        return self.job_power_w(devices, milli) * seconds


class PowerCap:
    """Running facility draw against a cap, updated incrementally (module docstring).

    ``cap_w=None`` makes it a pure meter. The draw is a function of exact integer
    counters, so allocate/release sequences never drift.

    Raises:
        ConfigError: a cap below the cluster's idle floor (it could never hold).
    """

    __slots__ = ("_used", "cap_w", "model")

    def __init__(self, model: PowerModel, cap_w: float | None = None) -> None:
        if cap_w is not None:
            if not (math.isfinite(cap_w) and cap_w > 0):
                raise ConfigError(f"power cap must be a positive number of W, got {cap_w!r}")
            if cap_w < model.idle_floor_w:
                raise ConfigError(
                    f"power cap {cap_w:.0f} W is below the cluster's idle draw "
                    f"{model.idle_floor_w:.0f} W (idle devices, node overhead, PUE); "
                    "no schedule can meet it"
                )
        self.model = model
        self.cap_w = cap_w
        self._used = [0] * len(model.types)

    @property
    def used_milli_by_type(self) -> tuple[int, ...]:
        """Allocated milli-devices per device type (order of ``model.types``)."""
        return tuple(self._used)

    @property
    def draw_w(self) -> float:
        """Current facility draw (W)."""
        return self.model.draw_by_type(self._used)

    @property
    def headroom_w(self) -> float:
        """``cap - draw`` (W); ``inf`` without a cap."""
        if self.cap_w is None:
            return math.inf
        return self.cap_w - self.draw_w

    def draw_after(self, devices: Iterable[int], milli: int = 1000) -> float:
        """Facility draw (W) if ``milli`` of each of ``devices`` were allocated now."""
        add = self.model.used_by_type(devices, milli)
        return self.model.draw_by_type([a + b for a, b in zip(self._used, add, strict=True)])

    def delta_w(self, devices: Iterable[int], milli: int = 1000) -> float:
        """Facility W that allocation would add."""
        return self.model.delta_w(devices, milli)

    def fits(self, devices: Iterable[int], milli: int = 1000) -> bool:
        """True when allocating keeps the draw at or below the cap."""
        return self.cap_w is None or self.draw_after(devices, milli) <= self.cap_w

    def allocate(self, devices: Iterable[int], milli: int = 1000, *, check: bool = True) -> float:
        """Record an allocation; returns the new draw.

        Raises:
            PowerCapError: ``check`` and the draw would exceed the cap (nothing changes).
        """
        add = self.model.used_by_type(devices, milli)
        new = [a + b for a, b in zip(self._used, add, strict=True)]
        draw = self.model.draw_by_type(new)
        if check and self.cap_w is not None and draw > self.cap_w:
            raise PowerCapError(
                f"allocation would raise the facility draw to {draw:.0f} W, above the "
                f"cap {self.cap_w:.0f} W"
            )
        self._used = new
        return draw

    def release(self, devices: Iterable[int], milli: int = 1000) -> float:
        """Record a release; returns the new draw."""
        sub = self.model.used_by_type(devices, milli)
        new = [a - b for a, b in zip(self._used, sub, strict=True)]
        if any(x < 0 for x in new):
            raise ConfigError("power cap: released more than was allocated")
        self._used = new
        return self.model.draw_by_type(new)


# --------------------------------------------------------------------------- series


def integrate_power(t: npt.ArrayLike, w: npt.ArrayLike, t_end: float) -> float:
    """Exact integral (J) of the step series ``w[i]`` on ``[t[i], t[i+1])`` up to ``t_end``."""
    ta = np.asarray(t, dtype=np.float64)
    wa = np.asarray(w, dtype=np.float64)
    if ta.size == 0:
        return 0.0
    edges = np.append(ta, max(float(t_end), float(ta[-1])))
    return float(np.sum(wa * np.diff(edges)))


@dataclass(frozen=True)
class PowerSeries:
    """Facility draw over time: ``draw_w[i]`` holds on ``[t[i], t[i+1])``; ends at ``t_end``."""

    t: FloatArray
    draw_w: FloatArray
    t_end: float

    @property
    def energy_j(self) -> float:
        """Facility energy over the series (J)."""
        return integrate_power(self.t, self.draw_w, self.t_end)

    @property
    def energy_kwh(self) -> float:
        """Facility energy (kWh)."""
        return self.energy_j / J_PER_KWH

    @property
    def peak_w(self) -> float:
        """Highest draw at any instant (W)."""
        return float(self.draw_w.max()) if self.draw_w.size else 0.0

    @property
    def mean_w(self) -> float:
        """Time-averaged draw (W)."""
        span = self.t_end - float(self.t[0]) if self.t.size else 0.0
        return self.energy_j / span if span > 0 else self.peak_w

    def headroom_w(self, cap_w: float) -> FloatArray:
        """``cap - draw`` at every change point (W)."""
        return cap_w - self.draw_w

    def cumulative_kwh(self) -> FloatArray:
        """Energy (kWh) consumed up to each change point."""
        if self.t.size == 0:
            return np.zeros(0)
        dt = np.diff(self.t, prepend=self.t[0])
        prev = np.concatenate([[0.0], self.draw_w[:-1]])
        return np.cumsum(prev * dt) / J_PER_KWH


def draw_series_from_records(
    records: Sequence[object], model: PowerModel, t0: float, t_end: float
) -> PowerSeries:
    """The exact facility draw of a finished non-preemptive run, rebuilt from job records.

    Each job that started holds its devices on ``[first_start, end)`` (``end`` =
    ``t_end`` if it was still running). Values at one instant are those after every
    change at that instant (as the engine records them).

    Raises:
        ConfigError: a job was preempted or interrupted (its segments are not recorded;
            use :class:`PowerCap` as a meter during the run instead).
    """
    times: list[float] = [t0]
    deltas: list[list[int]] = [[0] * len(model.types)]
    for rec in records:
        start = float(getattr(rec, "first_start", math.nan))
        if math.isnan(start):
            continue
        if getattr(rec, "preemptions", 0) or getattr(rec, "failures", 0):
            raise ConfigError(
                f"job '{getattr(rec, 'id', '?')}' was preempted or interrupted; rebuild the "
                "draw with a PowerCap meter during the run instead"
            )
        end = float(getattr(rec, "end", math.nan))
        if math.isnan(end):
            end = t_end
        job = getattr(rec, "job")  # noqa: B009
        add = model.used_by_type(getattr(rec, "devices"), int(job.gpu_milli))  # noqa: B009
        times.append(start)
        deltas.append(add)
        times.append(end)
        deltas.append([-x for x in add])
    t = np.asarray(times, dtype=np.float64)
    d = np.asarray(deltas, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t, d = t[order], d[order]
    cum = np.cumsum(d, axis=0)
    last = np.append(t[1:] != t[:-1], True)
    t, cum = t[last], cum[last]
    draw = np.array([model.draw_by_type([int(x) for x in row]) for row in cum])
    return PowerSeries(t, draw, t_end)


# --------------------------------------------------------------------------- capping


def dvfs_speed_factor(limit_w: float, spec: DeviceSpec, exponent: float = 3.0) -> float:
    """Clock (hence compute-speed) factor of a device power-limited to ``limit_w``.

    Dynamic CMOS power scales as ``C V^2 f`` and voltage tracks frequency in the DVFS
    range, so ``P_dyn ~ f^exponent`` (exponent 3) [D]::

        factor = ((limit - idle) / (tdp - idle)) ** (1 / exponent), clipped to (0, 1]

    Compute-bound work slows by this factor; memory-bound work is taken as unaffected
    (HBM runs on its own clock).
    """
    if limit_w >= spec.tdp_w:
        return 1.0
    span = spec.tdp_w - spec.idle_w
    if span <= 0:
        return 1.0
    x = (limit_w - spec.idle_w) / span
    if x <= 0:
        raise ConfigError(
            f"power limit {limit_w:.0f} W is at or below {spec.name}'s idle power "
            f"{spec.idle_w:.0f} W; the device cannot run"
        )
    return float(x ** (1.0 / exponent))


def uniform_limit_fraction(model: PowerModel, cap_w: float) -> float:
    """Largest device power-limit fraction of TDP that keeps the cluster's peak under ``cap_w``.

    With every device allocated at limit ``f * tdp``: ``pue * (overhead + f * sum tdp)
    <= cap`` gives ``f = (cap / pue - overhead) / sum tdp`` (capped at 1).

    Raises:
        ConfigError: the limit would fall to a device's idle power or below.
    """
    total_tdp = float((model.tdp_t * model.devices_t).sum())
    f = (cap_w / model.pue - model.overhead_total_w) / total_tdp
    if f >= 1.0 - 1e-9:  # the cap is at or above the peak: no limit needed
        return 1.0
    idle_frac = float((model.idle_t / model.tdp_t).max())
    if f <= idle_frac:
        raise ConfigError(
            f"cap {cap_w:.0f} W leaves a device power limit of {f:.3f} x TDP, at or below "
            f"idle ({idle_frac:.3f} x TDP); devices cannot run under it"
        )
    return f
