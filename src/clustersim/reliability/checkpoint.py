"""Checkpointing: policy, cost model, interval rules and the periodic-cycle arithmetic.

Owns:

* :class:`CheckpointPolicy` (+ :class:`InMemoryCheckpoint`): synchronous or
  asynchronous checkpoints to storage, optional in-memory/peer checkpoints with a
  slower persistent tier behind them, fixed / Young / Daly interval policy.
* :func:`checkpoint_costs` -- turns a policy and a job size into the four numbers
  the simulator needs: blocking stall ``s`` per checkpoint, background persist
  ``p`` (the checkpoint commits ``p`` after the stall ends), compute slowdown
  ``f`` while persisting, and restore times.
* :func:`young_interval`, :func:`daly_interval`, :func:`meta_expected_ettr`,
  :func:`availability_optimal_interval` -- the published formulas.
* :class:`CycleTimeline` -- closed-form position of a running job inside its
  checkpoint cycle, so a run segment of any length costs O(1) (no event per
  checkpoint).

Units: seconds, bytes, bytes/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustersim.errors import ConfigError

LLAMA3_STATE_BYTES_PER_GPU = 4e9
"""Largest per-GPU checkpoint of Llama 3 (arXiv 2407.21783 §3.3.1: 1 MB to 4 GB per GPU)."""
LLAMA3_STORAGE_BW = 2e12
"""Tectonic sustained throughput for Llama 3 training (2 TB/s; 7 TB/s peak)."""
LLAMA3_GPUS = 16384
PCIE5_X16_BW = 64e9
"""PCIe 5.0 x16, per direction (PCI-SIG: 32 GT/s x 16 lanes ~ 64 GB/s)."""
NIC_400G_BW = 50e9
"""One 400 Gb/s NIC per GPU (ConnectX-7 class), bytes/s."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class InMemoryCheckpoint(_Model):
    """Checkpoints kept in host memory of peer nodes (Gemini-style), with a storage tier behind.

    A snapshot is copied to host memory (``snapshot_bandwidth`` of the policy)
    and replicated to the other nodes of its peer group (``peer_bandwidth``);
    it commits when replication ends. A failure loses the in-memory copy only
    if every node of some peer group (``replicas`` consecutive job nodes) is
    down at once; then the job rolls back to the storage tier, which persists
    every ``persist_every``-th snapshot, i.e. about every ``storage_interval`` s.
    """

    peer_bandwidth: float = Field(default=NIC_400G_BW, gt=0, description="bytes/s per device")
    replicas: int = Field(default=2, ge=1, description="nodes holding each shard")
    storage_interval: float = Field(default=3600.0, gt=0, description="seconds between persists")


class CheckpointPolicy(_Model):
    """How and how often a job checkpoints.

    * ``mode``: ``sync`` stalls training for the whole write; ``async`` stalls only
      for the device-to-host snapshot and persists in the background, slowing
      compute by ``overlap_slowdown`` meanwhile; the checkpoint only counts once
      persisted.
    * ``policy``: ``fixed`` uses ``interval``; ``young`` sqrt(2 w M); ``daly`` Daly's
      higher-order optimum; ``none`` never checkpoints. ``interval`` and the
      optimum are seconds of *compute* between checkpoints; M is the job MTTF
      from the failure model, w the blocking cost per checkpoint.
    * Write time of one checkpoint = ``state_bytes_per_device`` / min(device
      bandwidth, storage bandwidth per device); ``storage_bandwidth`` (aggregate)
      overrides the per-device share when set.
    """

    mode: Literal["sync", "async"] = "sync"
    policy: Literal["fixed", "young", "daly", "none"] = "young"
    interval: float | None = Field(default=None, gt=0, description="seconds of compute")
    state_bytes_per_device: float = Field(default=LLAMA3_STATE_BYTES_PER_GPU, ge=0)
    device_bandwidth: float = Field(default=PCIE5_X16_BW, gt=0, description="device->host")
    snapshot_bandwidth: float = Field(default=PCIE5_X16_BW, gt=0, description="async copy")
    storage_bandwidth_per_device: float = Field(
        default=LLAMA3_STORAGE_BW / LLAMA3_GPUS, gt=0, description="write share of storage"
    )
    storage_read_bandwidth_per_device: float = Field(
        default=LLAMA3_STORAGE_BW / LLAMA3_GPUS, gt=0, description="read share of storage"
    )
    storage_bandwidth: float | None = Field(default=None, gt=0, description="aggregate override")
    overlap_slowdown: float = Field(default=0.0, ge=0.0, lt=1.0)
    in_memory: InMemoryCheckpoint | None = None

    @model_validator(mode="after")
    def _interval(self) -> CheckpointPolicy:
        if self.policy == "fixed" and self.interval is None:
            raise ValueError("policy 'fixed' needs 'interval' (seconds of compute)")
        return self


@dataclass(frozen=True, slots=True)
class CheckpointCosts:
    """Per-checkpoint times for one job (seconds).

    ``stall``: blocking time per checkpoint; ``persist``: background time after
    the stall until the fast tier commits; ``slowdown``: compute slowdown during
    ``persist``; ``storage_persist``: time after the stall until the storage tier
    commits (in-memory mode; equals ``persist`` otherwise); ``persist_every``:
    every k-th checkpoint reaches storage; ``load_fast`` / ``load_storage``:
    restore times from the fast tier / storage.
    """

    stall: float
    persist: float
    slowdown: float
    storage_persist: float
    persist_every: int
    load_fast: float
    load_storage: float
    in_memory: bool
    replicas: int

    @property
    def blocking_cost(self) -> float:
        """w of Young/Daly: wall time lost per checkpoint without failures."""
        return self.stall + self.slowdown * self.persist


def checkpoint_costs(policy: CheckpointPolicy, devices: int, interval: float) -> CheckpointCosts:
    """Costs of ``policy`` for a job of ``devices`` devices checkpointing every ``interval`` s."""
    if devices <= 0:
        raise ConfigError(f"job needs devices > 0, got {devices}")
    size = policy.state_bytes_per_device
    if policy.storage_bandwidth is not None:
        w_bw = min(policy.device_bandwidth, policy.storage_bandwidth / devices)
        r_bw = min(policy.device_bandwidth, policy.storage_bandwidth / devices)
    else:
        w_bw = min(policy.device_bandwidth, policy.storage_bandwidth_per_device)
        r_bw = min(policy.device_bandwidth, policy.storage_read_bandwidth_per_device)
    write = size / w_bw
    read = size / r_bw
    if policy.in_memory is not None:
        mem = policy.in_memory
        snap = size / policy.snapshot_bandwidth
        repl = size / mem.peer_bandwidth
        every = max(1, round(mem.storage_interval / interval)) if math.isfinite(interval) else 1
        return CheckpointCosts(
            stall=snap,
            persist=repl,
            slowdown=policy.overlap_slowdown,
            storage_persist=repl + write,
            persist_every=every,
            load_fast=repl,
            load_storage=read,
            in_memory=True,
            replicas=mem.replicas,
        )
    if policy.mode == "async":
        snap = size / policy.snapshot_bandwidth
        return CheckpointCosts(
            stall=snap,
            persist=write,
            slowdown=policy.overlap_slowdown,
            storage_persist=write,
            persist_every=1,
            load_fast=read,
            load_storage=read,
            in_memory=False,
            replicas=1,
        )
    return CheckpointCosts(
        stall=write,
        persist=0.0,
        slowdown=0.0,
        storage_persist=0.0,
        persist_every=1,
        load_fast=read,
        load_storage=read,
        in_memory=False,
        replicas=1,
    )


def young_interval(w: float, mttf: float) -> float:
    """Young (1974): compute time between checkpoints sqrt(2 w M)."""
    if w < 0 or mttf <= 0:
        raise ConfigError(f"Young interval needs w >= 0 and MTTF > 0 (w={w}, M={mttf})")
    return math.sqrt(2.0 * w * mttf)


def daly_interval(w: float, mttf: float) -> float:
    """Daly (2006) higher-order optimum.

    sqrt(2wM) * (1 + sqrt(w/(2M))/3 + w/(18M)) - w for w < 2M, else M.
    """
    if w < 0 or mttf <= 0:
        raise ConfigError(f"Daly interval needs w >= 0 and MTTF > 0 (w={w}, M={mttf})")
    if w >= 2.0 * mttf:
        return mttf
    x = w / (2.0 * mttf)
    return math.sqrt(2.0 * w * mttf) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - w


def availability_optimal_interval(t_s: float, t_f: float, t_r: float) -> float:
    """NVIDIA (arXiv 2410.18124): T_c = T_s + sqrt(2 (T_f + T_r) T_s + T_s^2)."""
    return t_s + math.sqrt(2.0 * (t_f + t_r) * t_s + t_s * t_s)


def meta_expected_ettr(
    n_nodes: float, r_f_per_node_day: float, u0: float, interval: float, w: float
) -> float:
    """Meta HPCA'25 closed form: (1 - N r_f (u0 + dt/2)) / (1 + w/dt); times in seconds."""
    rate = n_nodes * r_f_per_node_day / 86400.0
    return (1.0 - rate * (u0 + interval / 2.0)) / (1.0 + w / interval)


def resolve_interval(policy: CheckpointPolicy, devices: int, mttf: float) -> float:
    """Compute seconds between checkpoints for a job (``inf`` for ``policy='none'``).

    Young/Daly use the blocking cost w of :func:`checkpoint_costs` (which does
    not depend on the interval) and the job MTTF ``mttf`` (seconds). With a
    background persist the optimum is raised to at least the compute time the
    persist spans, persist / (1 - slowdown), so checkpoints never queue behind
    each other.
    """
    if policy.policy == "none":
        return math.inf
    if policy.policy == "fixed":
        assert policy.interval is not None
        return policy.interval
    costs = checkpoint_costs(policy, devices, 1.0)
    if not math.isfinite(mttf):
        return math.inf
    w = max(costs.blocking_cost, 1e-9)
    best = young_interval(w, mttf) if policy.policy == "young" else max(daly_interval(w, mttf), w)
    # a background persist must finish within the next interval, or training waits for it
    return max(best, costs.persist / (1.0 - costs.slowdown))


@dataclass(frozen=True, slots=True)
class SegmentState:
    """Where a run segment stands ``elapsed`` seconds after it started.

    ``progress``: compute done (seconds at full speed); ``overhead``: wall time
    spent on checkpoints (stalls, slowdown, waiting for a persist);
    ``progress + overhead == elapsed`` up to rounding.
    """

    progress: float
    overhead: float


class CycleTimeline:
    """Closed-form checkpoint cycle of a run segment that starts right after a restore.

    Cycle 1: ``interval`` of compute at full speed, then the stall ``s``
    (snapshot n = 1 ends at E_1 = interval + s). Cycle n >= 2: while snapshot n-1
    persists (``p`` s) compute runs at speed 1 - f; if the interval's compute is
    done before the persist ends, training waits for it; then compute at full
    speed to a full interval, then the stall. Every cycle n >= 2 has the same
    length C, so E_n = E_1 + (n - 1) C. Snapshot n commits to the fast tier at
    E_n + p and (every ``persist_every``-th) to storage at E_n + storage_persist.
    """

    def __init__(self, interval: float, costs: CheckpointCosts) -> None:
        self.dt = interval
        self.s = costs.stall
        self.p = costs.persist
        self.f = costs.slowdown
        self.ps = costs.storage_persist
        self.every = costs.persist_every
        if not math.isfinite(interval):
            self.a = self.b = self.wait = 0.0
            self.cycle = math.inf
            self.e1 = math.inf
            return
        if self.p <= 0.0:
            self.a, self.b, self.wait = 0.0, interval, 0.0
        else:
            full = interval / (1.0 - self.f)
            if self.p <= full:
                self.a, self.b, self.wait = self.p, interval - (1.0 - self.f) * self.p, 0.0
            else:
                self.a, self.b, self.wait = full, 0.0, self.p - full
        self.cycle = self.a + self.b + self.wait + self.s
        self.e1 = interval + self.s

    def snapshot_end(self, n: int) -> float:
        """Elapsed time at which snapshot ``n`` (1-based) ends."""
        return self.e1 + (n - 1) * self.cycle

    def snapshots_by(self, elapsed: float) -> int:
        """Number of snapshots finished at or before ``elapsed``."""
        if elapsed < self.e1:
            return 0
        return 1 + math.floor((elapsed - self.e1) / self.cycle + 1e-12)

    def committed(self, elapsed: float, delay: float, every: int = 1) -> int:
        """Highest snapshot committed by ``elapsed`` (commit = end + delay; multiples of every)."""
        n = self.snapshots_by(elapsed - delay)
        return (n // every) * every

    def state(self, elapsed: float) -> SegmentState:
        """Progress and checkpoint overhead after ``elapsed`` seconds of the segment."""
        dt, s = self.dt, self.s
        if elapsed <= dt or not math.isfinite(self.e1):
            return SegmentState(elapsed, 0.0)
        if elapsed < self.e1:
            return SegmentState(dt, elapsed - dt)
        n = self.snapshots_by(elapsed)
        m = n - 1
        r = max(0.0, elapsed - self.e1 - m * self.cycle)
        prog = n * dt
        ovh = s + m * (self.cycle - dt)
        if r <= self.a:
            return SegmentState(prog + (1.0 - self.f) * r, ovh + self.f * r)
        prog_a = (1.0 - self.f) * self.a
        ovh += self.f * self.a
        r -= self.a
        if r <= self.b:
            return SegmentState(prog + prog_a + r, ovh)
        r -= self.b
        return SegmentState(prog + dt, ovh + min(r, self.wait + s))

    def time_to_progress(self, work: float) -> float:
        """Elapsed time at which progress first reaches ``work`` (> 0)."""
        dt = self.dt
        if work <= dt or not math.isfinite(self.e1):
            return work
        k = math.ceil(work / dt) - 1  # snapshots taken before the last stretch
        rem = work - k * dt
        start = self.snapshot_end(k)
        if rem <= (1.0 - self.f) * self.a:
            return start + rem / (1.0 - self.f)
        return start + self.a + (rem - (1.0 - self.f) * self.a)


__all__ = [
    "LLAMA3_STATE_BYTES_PER_GPU",
    "LLAMA3_STORAGE_BW",
    "NIC_400G_BW",
    "PCIE5_X16_BW",
    "CheckpointCosts",
    "CheckpointPolicy",
    "CycleTimeline",
    "InMemoryCheckpoint",
    "SegmentState",
    "availability_optimal_interval",
    "checkpoint_costs",
    "daly_interval",
    "meta_expected_ettr",
    "resolve_interval",
    "young_interval",
]
