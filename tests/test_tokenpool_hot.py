"""token_pooled with one hot model: the decode hand-off must not queue behind a backlog.

Regression for the temporal-market finding (docs/serving.md §6.2): the hand-off tested a
decode worker's room with the sequence's own KV only, so a short-prompt sequence was
handed to a worker that already ran the model but had KV-blocked sequences waiting (FIFO:
it queued behind them), and KV caches still in transit were not counted. The hot model's
sequences piled up on the workers that already ran it while other decode workers stayed
idle, so more devices did not help.
"""

from __future__ import annotations

import numpy as np

from clustersim.serving import Market, attainment, simulate
from clustersim.serving.models import get_model
from clustersim.serving.simulator import ServingSim
from clustersim.serving.tokenpool import TokenPooled
from clustersim.serving.workload import MarketModel, Requests


def _hot_market(rate: float, duration: float, seed: int = 0) -> Market:
    """One Qwen2.5-32B model, Poisson arrivals, prompts 3,000 or 100 tokens (1:1), 200 out."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * duration))
    t = np.sort(rng.uniform(0.0, duration, n))
    prompt = np.where(rng.random(n) < 0.5, 3000, 100)
    out = np.full(n, 200)
    models = (MarketModel("hot", get_model("Qwen2.5-32B")),)
    return Market(models, Requests.build(t, np.zeros(n, np.int32), prompt, out), duration, "hot")


def _setup(gpus: int) -> tuple[TokenPooled, ServingSim]:
    mk = _hot_market(1.0, 10.0)
    pol = TokenPooled()
    sim = ServingSim(mk, pol, device="H20", gpus=gpus)
    pol.setup(sim)
    return pol, sim


def test_handoff_skips_worker_with_waiting_sequences() -> None:
    pol, _ = _setup(16)
    dws = pol.decode_workers[2]
    assert len(dws) >= 2
    a, b = dws[0], dws[1]
    a._admit(0.0, (0, 0, 100, 50, 0.0, 0, 0.0))  # a runs a batch of model 0 ...
    assert a.has_room(0, 100)
    # ... so the `same` preference picks it
    assert pol.pick_decode([a, b], 0, 100, 0.0) is a
    a.waiting.append((1, 0, 3000, 50, 0.0, 0, 0.0))  # ... but a KV-blocked sequence waits
    assert a.has_room(0, 100)  # the newcomer's own KV would fit,
    assert pol.pick_decode([a, b], 0, 100, 0.0) is b  # yet it would queue behind: go to b


def test_handoff_counts_kv_in_transit() -> None:
    pol, _ = _setup(16)
    dws = pol.decode_workers[2]
    a, b = dws[0], dws[1]
    a._admit(0.0, (0, 0, 100, 50, 0.0, 0, 0.0))
    kv = pol.cost(0, 2).kv_bytes_per_token
    free_tokens = int((a.kv_cap - a.kv_used() - a.growth()) // kv)
    a.inbound = (free_tokens - 50) * kv  # handed-off caches not yet arrived
    assert a.has_room(0, 100) and not a.can_take(0, 100)
    assert pol.pick_decode([a, b], 0, 100, 0.0) is b
    # every hand-off is booked until its KV cache arrives
    a.inbound = 0.0
    pol.sim.first_token = np.full(8, np.nan)
    pol.prefill_done(pol.prefill_workers[2][0], 0.0, 3, 0, 3000, 10)
    booked = [w for w in dws if w.inbound > 0]
    assert len(booked) == 1 and booked[0].inbound == 3000 * kv


def test_hot_model_served_when_pool_is_large_enough() -> None:
    # 150 req/s of a 32B model for 60 s on 400 H20s (22 TP2 decode workers). Before the
    # fix: 55.9 % attainment (13 of 22 decode workers ever used, p99 gap 78 s) and
    # 400 devices barely beat 250; after: >= 99 %.
    mk = _hot_market(150.0, 60.0)
    pol = TokenPooled()
    res = simulate(mk, pol, device="H20", gpus=400)
    assert attainment(res) >= 0.99
    used = sum(1 for w in pol.decode_workers[2] if w.busy > 0)
    assert used >= 15
    assert all(not w.waiting and w.inbound == 0.0 for w in pol.decode_workers[2])
