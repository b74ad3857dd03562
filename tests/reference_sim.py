"""An independent, deliberately naive reference simulator used to cross-check the engine.

It shares no code with clustersim: a plain loop that jumps from event to event
(arrival, completion, LAS threshold crossing), re-decides the whole schedule at
every instant from scratch, and counts devices only (ideal network, any
placement). It implements the same pinned rules as the built-in policies:

* ``fifo``: start waiting jobs in (submit, index) order until one does not fit;
* ``fifo_backfill``: start every waiting job in that order that fits;
* ``sjf``: like backfill, ordered by (duration, submit, index), non-preemptive;
* ``srtf``: greedy over running+waiting by (remaining, index); preempt the rest;
* ``las``: greedy over (queue, running-first, queue entry, index).

Cost is O(events x jobs log jobs); fine for a few hundred jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-9


@dataclass
class RJob:
    idx: int
    submit: float
    gpus: int
    duration: float
    remaining: float = 0.0
    attained: float = 0.0
    level: int = 0
    entry: float = 0.0
    running: bool = False
    started: bool = False
    end: float | None = None
    preemptions: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def simulate(
    jobs: list[tuple[float, int, float]],
    capacity: int,
    policy: str,
    thresholds: tuple[float, ...] = (3600.0,),
) -> list[RJob]:
    """``jobs`` = (submit, gpus, duration) in trace order; returns jobs with ``end`` set."""
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i][0], i))
    rjobs = [RJob(i, *jobs[i]) for i in range(len(jobs))]
    for j in rjobs:
        j.remaining = j.duration
        j.entry = j.submit
    rank = {i: r for r, i in enumerate(order)}
    pending = [rjobs[i] for i in order]
    active: list[RJob] = []
    t = pending[0].submit if pending else 0.0
    while pending or active:
        # admit arrivals
        while pending and pending[0].submit <= t + EPS:
            active.append(pending.pop(0))
        # completions
        for j in list(active):
            if j.running and j.remaining <= EPS:
                j.end, j.running = t, False
                active.remove(j)
        # LAS demotion
        if policy == "las":
            for j in active:
                lv = sum(1 for th in thresholds if j.attained >= th - 1e-6)
                if lv > j.level:
                    j.level, j.entry = lv, t
        decide(active, capacity, policy, rank)
        # next event
        nxt = [pending[0].submit] if pending else []
        for j in active:
            if j.running:
                nxt.append(t + j.remaining)
                if policy == "las" and j.level < len(thresholds):
                    nxt.append(t + thresholds[j.level] - j.attained)
        if not nxt:
            break  # nothing can ever happen again (stalled)
        t_next = max(min(nxt), t)
        dt = t_next - t
        for j in active:
            if j.running:
                j.remaining -= dt
                j.attained += dt
        t = t_next
    return rjobs


def decide(active: list[RJob], capacity: int, policy: str, rank: dict[int, int]) -> None:
    used = sum(j.gpus for j in active if j.running)
    if policy in ("fifo", "fifo_backfill", "sjf"):
        waiting = [j for j in active if not j.running]
        if policy == "sjf":
            waiting.sort(key=lambda j: (j.duration, rank[j.idx]))
        else:
            waiting.sort(key=lambda j: rank[j.idx])
        for j in waiting:
            if used + j.gpus <= capacity:
                j.running = j.started = True
                used += j.gpus
            elif policy == "fifo":
                break
        return
    if policy == "srtf":
        ranked = sorted(active, key=lambda j: (j.remaining, rank[j.idx]))
    elif policy == "las":
        ranked = sorted(
            active, key=lambda j: (j.level, 0 if j.running else 1, j.entry, rank[j.idx])
        )
    else:
        raise ValueError(policy)
    left = capacity
    keep = set()
    for j in ranked:
        if j.gpus <= left:
            keep.add(j.idx)
            left -= j.gpus
    for j in active:
        if j.running and j.idx not in keep:
            j.running = False
            j.preemptions += 1
        elif not j.running and j.idx in keep:
            j.running = j.started = True
