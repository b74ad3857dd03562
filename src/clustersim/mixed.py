"""Mixed clusters: one cluster of whole nodes shared by training jobs and a serving market.

Owns the co-simulation of the training engine (:class:`~clustersim.engine.Engine`, a
scheduler over a job list) and the serving simulator (:mod:`clustersim.serving`, a
market under a serving policy) on one cluster of ``nodes`` x ``gpus_per_node`` devices,
under three sharing policies (exact rules in :func:`simulate_mixed`):

* ``static_split`` — serving owns a fixed partition sized for its peak (today's practice);
* ``serving_first`` — serving's per-window node demand preempts training (``Reclaim``);
* ``borrow_idle`` — serving keeps a base and borrows whole nodes training leaves idle.

Coupling is one-way per policy, so the sides run in order: the training engine first
(with the serving demand as :class:`~clustersim.engine.Reclaim` events), then the
serving simulator with ``capacity_schedule`` = the devices the training run actually
left to serving. Both sides' metrics come from the existing metric functions
(:func:`clustersim.metrics.summarize`, :func:`clustersim.serving.summary`).

**Serving demand rule** (:func:`serving_plan`): per ``window`` (600 s, ServeGen's
window) and model, ``engines = max(1, ceil(rate * (1 + headroom) / capacity))`` with
``rate`` the model's arrival rate in that window (a perfect forecast) and ``capacity``
from :func:`~clustersim.serving.instance_capacity` (the steady-state prefill-first
engine model that ``dedicated_sizing(method="analytic")`` uses); the window's devices
are ``sum(engines * tp)`` and its nodes ``ceil(devices / gpus_per_node)``. The peak
over windows of each model's engines is exactly ``dedicated_sizing``'s analytic plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from clustersim.engine import Engine, EngineResult, Reclaim
from clustersim.errors import ConfigError, UnknownNameError
from clustersim.metrics import integrate_steps, job_table, summarize
from clustersim.schedulers.placement import get_placement
from clustersim.schedulers.registry import create_scheduler
from clustersim.serving.instance import EngineInstance
from clustersim.serving.metrics import cost_summary, gpus_over_time
from clustersim.serving.metrics import summary as serving_summary
from clustersim.serving.perf import LoadModel, PerfParams
from clustersim.serving.policies import Dedicated, engine_capacities, model_tp
from clustersim.serving.simulator import SLO, ServingResult, ServingSim
from clustersim.serving.workload import Market
from clustersim.topology import Cluster
from clustersim.workload.job import Job

__all__ = [
    "POLICIES",
    "MixedResult",
    "PlannedDedicated",
    "ServingPlan",
    "ServingSide",
    "TrainingSide",
    "check_conservation",
    "cluster_timeline",
    "idle_nodes_series",
    "serving_plan",
    "simulate_mixed",
    "window_jobs",
]

POLICIES = ("static_split", "serving_first", "borrow_idle")

Step = tuple[np.ndarray, np.ndarray]
"""A step function ``(t, v)``: value ``v[i]`` from ``t[i]`` to ``t[i+1]``."""


@dataclass(frozen=True)
class TrainingSide:
    """The training tenant: jobs, the scheduler that runs them, preemption costs.

    ``checkpoint_s`` (30 s: Ascend MindCluster, 3B model checkpoint flush) is spent
    holding the devices after a reclaim; ``restore_s`` (300 s: Meta's restart overhead
    u0 = 5 min used for real jobs) passes on each restart. See ``docs/mixed.md``.
    """

    jobs: tuple[Job, ...]
    scheduler: str = "fifo_backfill"
    params: Mapping[str, Any] = field(default_factory=dict)
    placement: str = "first_fit"
    checkpoint_s: float = 30.0
    restore_s: float = 300.0


@dataclass(frozen=True)
class ServingSide:
    """The serving tenant: a market, its SLO and performance/load models, the demand rule.

    ``window`` (s) and ``headroom`` (extra fraction of each window's rate) parametrise
    :func:`serving_plan`; ``tbt_headroom`` is :func:`instance_capacity`'s (0.8).
    """

    market: Market
    slo: SLO = field(default_factory=SLO)
    perf: PerfParams = field(default_factory=PerfParams)
    load: LoadModel = field(default_factory=LoadModel)
    window: float = 600.0
    headroom: float = 0.0
    tbt_headroom: float = 0.8


@dataclass
class ServingPlan:
    """Engines per model per window and what they need.

    Attributes:
        engines: ``(models, windows)`` engine counts. tp: devices per engine of each model.
        capacity: req/s one engine of each model sustains. window: seconds per window.
        devices: devices per window. nodes: whole nodes per window.
    """

    engines: np.ndarray
    tp: list[int]
    capacity: np.ndarray
    window: float
    devices: np.ndarray
    nodes: np.ndarray

    @property
    def static_engines(self) -> list[int]:
        """Each model's peak engine count (``dedicated_sizing``'s analytic plan)."""
        return [int(x) for x in self.engines.max(axis=1)]

    @property
    def static_devices(self) -> int:
        """Devices of the peak-sized static plan."""
        return int(sum(n * t for n, t in zip(self.static_engines, self.tp, strict=True)))


def serving_plan(serving: ServingSide, device: str, gpus_per_node: int) -> ServingPlan:
    """Apply the serving demand rule (module docstring) to every window of the market."""
    from clustersim.hardware import get_device

    dev = get_device(device)
    mk = serving.market
    p = serving.perf
    tps = model_tp(mk, dev, p)
    caps = engine_capacities(mk, dev, tps, serving.slo, p, serving.tbt_headroom)
    if np.any(caps <= 0):
        bad = int(np.argmin(caps))
        raise ConfigError(
            f"mixed: model '{mk.models[bad].name}' cannot meet the TBT target on {device} "
            "at any rate; drop it from the market or relax the SLO"
        )
    rates = mk.window_rates(serving.window) * (1.0 + serving.headroom)
    engines = np.maximum(1, np.ceil(rates / caps[:, None] - 1e-9)).astype(np.int64)
    devices = (engines * np.asarray(tps, dtype=np.int64)[:, None]).sum(axis=0)
    nodes = -(-devices // gpus_per_node)
    return ServingPlan(engines, list(tps), caps, serving.window, devices, nodes)


class PlannedDedicated(Dedicated):
    """Dedicated engines whose count per model follows a per-window plan within the capacity.

    Rule: at setup, engines for window 0 are created warm (weights loaded before the
    horizon) as the capacity allows. For each later window ``k`` starting at
    ``T = k * window``: at ``T - lead`` the target becomes ``max(plan[k-1], plan[k])``
    per model (grow early, so engines have loaded by ``T``), at ``T`` it becomes
    ``plan[k]``. Applying a target: every model above it stops its engines with the
    fewest outstanding requests first (ties: highest instance id), their requests are
    re-queued round-robin on the model's remaining engines; then engines are started
    one at a time while one fits in the free capacity, choosing the model by (has no
    engine first, largest deficit, lowest index); a started engine loads its weights
    (``LoadModel``, default tier) before serving. When the capacity shrinks below the
    allocation, engines are stopped until it fits, choosing by (model at or below its
    target last, model's only engine last, fewest outstanding, highest instance id);
    when it grows, engines are started as above. Dispatch is ``dedicated``'s round robin;
    a model with no engine drops its request (``rejected_by_policy``).
    """

    name: ClassVar[str] = "planned_dedicated"

    def __init__(self, plan: np.ndarray, tp: Sequence[int], window: float, lead: float) -> None:
        super().__init__(instances=[int(x) for x in plan[:, 0]], tp=list(tp), fast=False)
        self.plan = np.asarray(plan, dtype=np.int64)
        self.window = float(window)
        self.lead = float(lead)
        self.target = self.plan[:, 0].copy()
        self.started = 0
        self.stopped = 0

    def setup(self, sim: ServingSim) -> None:
        """Create window 0's engines (warm) and the window timers."""
        self.sim = sim
        nm = len(sim.market.models)
        if self.plan.shape[0] != nm:
            raise ConfigError(f"planned_dedicated: plan has {self.plan.shape[0]} models, not {nm}")
        self.by_model = [[] for _ in range(nm)]
        self._rr = [0] * nm
        self._fill(warm=True)
        for k in range(1, self.plan.shape[1]):
            t = k * self.window
            if self.lead > 0:
                grow = np.maximum(self.plan[:, k - 1], self.plan[:, k])
                sim.at(max(0.0, t - self.lead), self._applier(grow))
            sim.at(t, self._applier(self.plan[:, k]))

    def _applier(self, target: np.ndarray) -> Callable[[float], None]:
        def apply(_t: float) -> None:
            self._apply(target)

        return apply

    def replay(self, sim: ServingSim) -> bool:
        """Never replays: the engine set changes over time."""
        return False

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """``dedicated``'s round robin (the cursor wrapped first: engines come and go)."""
        n = len(self.by_model[model])
        if n:
            self._rr[model] %= n
        super().on_arrival(rid, model, prompt, output)

    def _stop(self, inst: EngineInstance) -> None:
        self._forget(inst)
        self.stopped += 1
        self.on_requeue(self.sim.stop_instance(inst))

    def _apply(self, target: np.ndarray) -> None:
        self.target = target
        now = self.sim.now
        for m, insts in enumerate(self.by_model):
            while len(insts) > target[m]:
                for e in insts:
                    e.advance_to(now)
                self._stop(min(insts, key=lambda e: (e.outstanding(), -e.iid)))
        self._fill()

    def _fill(self, warm: bool = False) -> None:
        sim, tp = self.sim, self.tp
        assert tp is not None
        while True:
            free = sim.free_gpus()
            best: tuple[bool, int, int] | None = None
            for m, insts in enumerate(self.by_model):
                deficit = int(self.target[m]) - len(insts)
                if deficit > 0 and tp[m] <= free:
                    key = (len(insts) > 0, -deficit, m)
                    if best is None or key < best:
                        best = key
            if best is None:
                return
            m = best[2]
            inst = sim.new_instance([m], tp[m], warm=warm)
            assert inst is not None
            self.by_model[m].append(inst)
            self.started += 1

    def on_capacity_change(self, old: float, new: float) -> None:
        """Shrink (rule in the class docstring) or start planned engines that now fit."""
        sim = self.sim
        while sim.used > sim.capacity:
            engines = [e for lst in self.by_model for e in lst]
            if not engines:
                break
            for e in engines:
                e.advance_to(sim.now)

            def key(e: EngineInstance) -> tuple[bool, bool, int, int]:
                m = e.models[0]
                n = len(self.by_model[m])
                return (n <= self.target[m], n == 1, e.outstanding(), -e.iid)

            self._stop(min(engines, key=key))
        if new > old:
            self._fill()

    def stats(self) -> dict[str, Any]:
        """Engines started and stopped by the plan or by capacity changes."""
        return {"engines_started": self.started, "engines_stopped": self.stopped}


@dataclass
class MixedResult:
    """Both sides of one mixed-cluster run.

    Attributes:
        policy: sharing policy. nodes, gpus_per_node, device: the cluster. horizon: s.
        plan: the serving plan. training: the engine's raw result. training_jobs: the
        per-job table (:func:`~clustersim.metrics.job_table`). serving: the serving result.
        serving_capacity: step function of devices serving held (``(t, devices)``).
        reclaims: the ``Reclaim`` events given to the engine. summary: JSON-ready metrics
        (``training``, ``serving``, ``cluster``).
    """

    policy: str
    nodes: int
    gpus_per_node: int
    device: str
    horizon: float
    plan: ServingPlan
    training: EngineResult
    training_jobs: dict[str, Any]
    serving: ServingResult
    serving_capacity: Step
    reclaims: list[Reclaim]
    summary: dict[str, Any]

    @property
    def devices(self) -> int:
        """Devices in the cluster."""
        return self.nodes * self.gpus_per_node

    def timeline(self) -> dict[str, np.ndarray]:
        """:func:`cluster_timeline` of this run."""
        return cluster_timeline(self)


def window_jobs(jobs: Sequence[Job], start: float, duration: float) -> list[Job]:
    """Jobs submitted in ``[start, start + duration)``, re-based so ``start`` is time 0."""
    out = [
        Job(j.id, j.submit_time - start, j.num_gpus, j.duration, j.gpu_milli, j.device_type, j.seq)
        for j in jobs
        if start <= j.submit_time < start + duration
    ]
    return out


def _step_at(step: Step, t: np.ndarray, before: float) -> np.ndarray:
    """Values of a step function at times ``t`` (``before`` ahead of its first point)."""
    st, sv = step
    i = np.searchsorted(st, t, side="right") - 1
    out = np.where(i >= 0, sv[np.maximum(i, 0)] if len(sv) else before, before)
    return np.asarray(out, dtype=float)


def _reclaim_schedule(plan: ServingPlan, lead: float) -> list[tuple[float, int]]:
    """Serving's node demand over time: grow ``lead`` s before a window, shrink at its start."""
    n = plan.nodes
    out = [(0.0, int(n[0]))]
    for k in range(1, len(n)):
        t = k * plan.window
        if lead > 0 and n[k] > n[k - 1]:
            out.append((max(0.0, t - lead), int(n[k])))
        else:
            out.append((t, int(n[k])))
    return out


def idle_nodes_series(res: EngineResult, cluster: Cluster, held: int) -> Step:
    """Whole nodes with no training device in use (from the run's segments), minus ``held``.

    Rule: a node is busy from the start to the end of every segment (a job holding one
    of its devices, checkpointing included); all events at one instant are applied
    before the count is taken. ``held`` nodes (reclaimed for the whole run) never count.
    """
    node_of = cluster.node_of
    ev: list[tuple[float, int, int]] = []
    for _jid, s, e, devs in res.segments:
        if e <= s:
            continue
        for n in {int(node_of[d]) for d in devs}:
            ev.append((s, n, 1))
            ev.append((e, n, -1))
    ev.sort()
    busy = np.zeros(cluster.num_nodes, dtype=np.int64)
    nbusy = 0
    free = cluster.num_nodes - held
    ts, vs = [res.start_time], [free]
    i = 0
    while i < len(ev):
        t = ev[i][0]
        while i < len(ev) and ev[i][0] == t:
            _, n, d = ev[i]
            before = busy[n] > 0
            busy[n] += d
            nbusy += int(busy[n] > 0) - int(before)
            i += 1
        if t == ts[-1]:
            vs[-1] = free - nbusy
        else:
            ts.append(t)
            vs.append(free - nbusy)
    return np.array(ts, dtype=float), np.array(vs, dtype=float)


def _merge_steps(
    a: Step, b: Step, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], a0: float, b0: float
) -> Step:
    t = np.union1d(a[0], b[0])
    return t, fn(_step_at(a, t, a0), _step_at(b, t, b0))


def simulate_mixed(
    nodes: int,
    gpus_per_node: int,
    device: str,
    training: TrainingSide,
    serving: ServingSide,
    policy: str,
    *,
    horizon: float | None = None,
    base_nodes: int | None = None,
    lead: float | None = None,
    seed: int = 0,
    plan: ServingPlan | None = None,
) -> MixedResult:
    """Run one cluster of ``nodes`` x ``gpus_per_node`` ``device``s shared by both tenants.

    Policies (``plan`` = :func:`serving_plan`; ``N_k`` = its nodes in window ``k``):

    * ``static_split``: serving owns ``P = ceil(static_devices / gpus_per_node)`` nodes
      for the whole run (each model's peak engine count, = ``dedicated_sizing`` analytic);
      the engine gets ``Reclaim(0, P)`` (all nodes idle then: nodes ``0..P-1``), training
      runs on the rest and is never preempted; serving runs ``dedicated`` with the peak
      plan on ``P * gpus_per_node`` devices.
    * ``serving_first``: the engine gets ``Reclaim(0, N_0)`` and, for each window ``k >= 1``
      starting at ``T``, ``Reclaim(T - lead, N_k)`` if ``N_k > N_{k-1}`` else
      ``Reclaim(T, N_k)`` (grow ``lead`` early, default ``checkpoint_s`` + the slowest
      engine load, so nodes are handed over and engines loaded by ``T``; shrink at ``T``).
      The engine takes idle nodes first and preempts training on taken nodes (the
      ``Reclaim`` rule). Serving then runs :class:`PlannedDedicated` with the capacity
      the engine actually handed over (its ``held`` series: nodes reach serving only when
      their training jobs finished checkpointing).
    * ``borrow_idle``: serving reserves ``B`` nodes (``base_nodes``, default the plan's
      smallest window, ``min N_k``): ``Reclaim(0, B)``; training runs unaware of the rest.
      Beyond ``B``, serving holds ``min(max(0, want(t) - B), idle(t))`` more nodes, where
      ``want`` is the ``serving_first`` node schedule and ``idle`` the nodes without any
      training device in use (:func:`idle_nodes_series`); when training starts on a
      borrowed node, serving loses it at that instant (its engines there stop and their
      requests are re-queued), so training never waits for or is preempted by serving.
      Serving runs :class:`PlannedDedicated` on that capacity.

    Training runs to ``horizon`` (default: the market's duration); serving's requests
    arriving before it are replayed. Deterministic: no random draws outside ``seed``.
    """
    if policy not in POLICIES:
        raise UnknownNameError("mixed-cluster policy", policy, POLICIES)
    if nodes < 1 or gpus_per_node < 1:
        raise ConfigError(f"mixed: need >= 1 node of >= 1 device, got {nodes} x {gpus_per_node}")
    cluster = Cluster.uniform(nodes, gpus_per_node, device)
    H = float(horizon if horizon is not None else serving.market.duration)
    plan = plan or serving_plan(serving, device, gpus_per_node)
    from clustersim.hardware import get_device

    dev = get_device(device)
    if lead is None:
        load_s = max(
            (
                serving.load.load_time(mm.spec, dev, plan.tp[m])
                for m, mm in enumerate(serving.market.models)
            ),
            default=0.0,
        )
        lead = training.checkpoint_s + load_s
    want = _reclaim_schedule(plan, lead)
    if policy == "static_split":
        P = -(-plan.static_devices // gpus_per_node)
        if nodes < P:
            raise ConfigError(
                f"static_split: serving's peak plan needs {P} nodes; the cluster has {nodes}"
            )
        reclaims = [Reclaim(0.0, P)]
    elif policy == "serving_first":
        reclaims = [Reclaim(t, min(n, nodes)) for t, n in want]
    else:
        B = int(plan.nodes.min()) if base_nodes is None else int(base_nodes)
        if not 0 <= B <= nodes:
            raise ConfigError(f"borrow_idle: base_nodes={B} outside 0..{nodes}")
        reclaims = [Reclaim(0.0, B)]
    jobs = list(training.jobs)
    if not jobs:
        raise ConfigError("mixed: the training side has no jobs")
    first = min(j.submit_time for j in jobs)
    if first < 0:
        raise ConfigError(f"mixed: a training job is submitted at t={first} < 0")
    eng = Engine(
        cluster,
        jobs,
        create_scheduler(training.scheduler, dict(training.params)),
        get_placement(training.placement),
        checkpoint_s=training.checkpoint_s,
        restore_s=training.restore_s,
        horizon=max(H - first, 0.0),
        policy_name=training.scheduler,
        reclaims=reclaims,
    )
    wide = [j.id for j in jobs if j.num_gpus > cluster.num_devices]
    eng.mark_skipped(wide)
    raw = eng.run()
    # serving capacity (devices) over time
    g = float(gpus_per_node)
    if policy == "static_split":
        cap: Step = (np.array([0.0]), np.array([reclaims[0].nodes * g]))
    elif policy == "serving_first":
        cap = (np.append(0.0, raw.util_t), np.append(raw.held[0], raw.held).astype(float))
    else:
        B = reclaims[0].nodes
        idle = idle_nodes_series(raw, cluster, B)
        wt = np.array([t for t, _ in want], dtype=float)
        wv = np.array([max(0, n - B) for _, n in want], dtype=float)
        t_, extra = _merge_steps((wt, wv), idle, np.minimum, 0.0, float(nodes - B))
        cap = (t_, (B + extra) * g)
    cap = _compact(cap)
    if policy == "static_split":
        pol: Any = Dedicated(instances=plan.static_engines, tp=plan.tp)
    else:
        pol = PlannedDedicated(plan.engines, plan.tp, plan.window, lead)
    sched = [(float(t), int(v)) for t, v in zip(cap[0][1:], cap[1][1:], strict=True)]
    sim = ServingSim(
        serving.market,
        pol,
        device=dev,
        gpus=int(cap[1][0]),
        capacity_schedule=sched,
        slo=serving.slo,
        perf=serving.perf,
        load=serving.load,
        horizon=H,
        rng=np.random.default_rng(seed),
    )
    sres = sim.run()
    table = job_table(raw.records)
    result = MixedResult(
        policy, nodes, gpus_per_node, device, H, plan, raw, table, sres, cap, reclaims, {}
    )
    result.summary = _summary(result, training)
    return result


def _compact(step: Step) -> Step:
    """Drop repeated times (keep the last value) and unchanged values."""
    t, v = step
    keep = np.append(t[1:] != t[:-1], True)
    t, v = t[keep], v[keep]
    ch = np.append(True, v[1:] != v[:-1])
    return t[ch], v[ch]


def cluster_timeline(res: MixedResult) -> dict[str, np.ndarray]:
    """Devices over time on the union of change points in ``[0, horizon)``.

    Keys: ``time``; ``training`` (allocated to jobs, checkpointing included);
    ``serving`` (allocated to serving engines); ``serving_held`` (capacity serving held);
    ``idle`` = cluster - training - serving (held-but-unused serving devices count as
    idle); each value holds from ``time[i]`` to ``time[i+1]`` (last to the horizon).
    """
    raw = res.training
    st, used, _ = gpus_over_time(res.serving)
    t = np.union1d(np.union1d(raw.util_t, st), res.serving_capacity[0])
    t = t[(t >= 0) & (t < res.horizon)]
    t = np.union1d([0.0], t)
    tr = _step_at((raw.util_t, raw.util_milli / 1000.0), t, 0.0)
    sv = _step_at((st[:-1], used[:-1]), t, 0.0)
    held = _step_at(res.serving_capacity, t, float(res.serving_capacity[1][0]))
    return {
        "time": t,
        "training": tr,
        "serving": sv,
        "serving_held": held,
        "idle": res.devices - tr - sv,
    }


def check_conservation(res: MixedResult) -> None:
    """Raise ``AssertionError`` unless at every instant no device is held by both tenants.

    Checks: training-allocated + serving-held <= cluster (the engine's own invariant
    with the held devices), serving-allocated <= serving-held, and training + serving
    + idle == cluster.
    """
    tl = cluster_timeline(res)
    cap = res.devices
    over = tl["training"] + tl["serving_held"] - cap
    assert (over <= 1e-9).all(), (
        f"training + serving held exceed the cluster at t={tl['time'][over.argmax()]}"
    )
    ex = tl["serving"] - tl["serving_held"]
    assert (ex <= 1e-9).all(), f"serving allocated more than it held at t={tl['time'][ex.argmax()]}"
    tot = tl["training"] + tl["serving"] + tl["idle"]
    assert np.allclose(tot, cap), "training + serving + idle != cluster"


def _summary(res: MixedResult, training: TrainingSide) -> dict[str, Any]:
    raw, table, H = res.training, res.training_jobs, res.horizon
    tsum = summarize(
        table, raw.util_t, raw.util_milli, raw.capacity, raw.start_time, raw.end_time, raw.down
    )
    progress = table["duration"] - table["remaining"]
    overhead = np.clip(table["run_time"] - progress, 0.0, None) * table["num_gpus"]
    price = res.serving.device.price_per_hour
    held_s = integrate_steps(res.serving_capacity[0], res.serving_capacity[1], H)
    held_mean = held_s / H if H > 0 else 0.0
    ssum = serving_summary(res.serving)
    ssum.pop("extra", None)
    cost = cost_summary(res.serving, pool_gpus=held_mean)
    tl = cluster_timeline(res)
    d = res.devices
    tr_s = integrate_steps(tl["time"], tl["training"], H)
    sv_s = integrate_steps(tl["time"], tl["serving"], H)
    tr_in_h = tr_s / (d * H) if H > 0 else 0.0
    own_h = raw.capacity * (raw.end_time - raw.start_time) / 3600.0 - tsum["down_device_hours"]
    own_util = tsum["allocated_device_hours"] / own_h if own_h > 0 else 0.0
    return {
        "policy": res.policy,
        "cluster": {
            "nodes": res.nodes,
            "gpus_per_node": res.gpus_per_node,
            "device": res.device,
            "devices": d,
            "horizon_s": H,
            "training_share": tr_in_h,
            "serving_allocated_share": sv_s / (d * H) if H > 0 else 0.0,
            "serving_held_share": held_s / (d * H) if H > 0 else 0.0,
            "allocated_share": (tr_s + sv_s) / (d * H) if H > 0 else 0.0,
            "idle_share": 1.0 - (tr_s + sv_s) / (d * H) if H > 0 else 0.0,
        },
        "training": {
            "jobs_total": tsum["jobs_total"],
            "jobs_completed": tsum["jobs_completed"],
            "jobs_unfinished": tsum["jobs_unfinished"],
            "avg_jct_s": tsum["avg_jct_s"],
            "p50_jct_s": tsum["p50_jct_s"],
            "p99_jct_s": tsum["p99_jct_s"],
            "avg_wait_s": tsum["avg_wait_s"],
            "avg_queue_delay_s": tsum["avg_queue_delay_s"],
            "preemptions_by_reclaim": raw.reclaim_preemptions,
            "checkpoint_restore_gpu_hours": float(overhead.sum()) / 3600.0,
            "useful_gpu_hours": float((progress * table["num_gpus"]).sum()) / 3600.0,
            "allocated_gpu_hours": tsum["allocated_device_hours"],
            "gpu_utilization_of_cluster": tsum["gpu_utilization"],
            "gpu_utilization_of_training_nodes": own_util,
            "checkpoint_s": training.checkpoint_s,
            "restore_s": training.restore_s,
            "scheduler": training.scheduler,
            "stopped_by": raw.stopped_by,
            "notes": list(raw.notes),
        },
        "serving": {
            "slo_attainment": ssum["slo_attainment"],
            "ttft_p50_s": ssum["ttft_p50_s"],
            "ttft_p99_s": ssum["ttft_p99_s"],
            "max_gap_p99_s": ssum["max_gap_p99_s"],
            "requests": ssum["requests"],
            "dropped": int(res.serving.dropped.sum()),
            "held_gpu_hours": held_s / 3600.0,
            "mean_held_gpus": held_mean,
            "peak_held_gpus": float(res.serving_capacity[1].max()),
            "allocated_gpu_hours": sv_s / 3600.0,
            "cost_usd": cost["provisioned_usd"],
            "cost_per_mtok": cost["cost_per_mtok"],
            "price_per_gpu_hour": price,
            "pool_utilization": cost["pool_utilization"],
            "plan_peak_gpus": int(res.plan.devices.max()),
            "plan_mean_gpus": float(res.plan.devices.mean()),
            "static_plan_gpus": res.plan.static_devices,
            **{k: v for k, v in res.serving.extra.items() if k.startswith("engines_")},
        },
    }
