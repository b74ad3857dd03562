"""Serving side of clustersim: a market of models, request streams, and serving policies.

Owns the model-market serving simulator (``dedicated`` / ``serverless`` /
``multiplexed`` / ``token_pooled`` / ``hybrid_pooled`` / ``autoscaled`` policies on a
device pool), its workload loaders and its metrics. See ``docs/serving.md``.

Quick start::

    import numpy as np
    from clustersim.serving import synthetic_market, simulate, summary
    mk = synthetic_market(20, 600.0, 5.0, np.random.default_rng(0), zipf_s=1.5,
                          specs=["Qwen2.5-7B", "Qwen2.5-14B"])
    res = simulate(mk, "token_pooled", device="H800", gpus=16)
    print(summary(res)["slo_attainment"])
"""

from __future__ import annotations

from clustersim.serving.metrics import (
    Lorenz,
    active_models_expected,
    active_models_observed,
    attainment,
    cost_summary,
    gpu_lorenz,
    gpus_needed,
    gpus_over_time,
    model_lorenz,
    per_gpu,
    per_model,
    slo_met,
    summary,
    tail_share,
)
from clustersim.serving.models import (
    MODEL_CATALOG,
    ModelSpec,
    get_model,
    min_tensor_parallel,
    register_model,
)
from clustersim.serving.perf import LoadModel, ModelCost, PerfParams, StepCost, model_cost
from clustersim.serving.policies import (
    Autoscaler,
    AutoscalerView,
    ScaleAction,
    ServingPolicy,
    dedicated_sizing,
    instance_capacity,
    make_serving_policy,
    register_serving_policy,
    serving_policy_names,
)
from clustersim.serving.simulator import SLO, ServingResult, ServingSim, simulate
from clustersim.serving.temporal import TemporalMarket, temporal_market
from clustersim.serving.workload import (
    Calibration,
    LengthTrace,
    Market,
    MarketModel,
    Requests,
    calibrated_market,
    diurnal_profile,
    fit_zipf_tail,
    genai_popularity,
    load_azure_llm,
    load_genai_load_latencies,
    load_genai_requests,
    load_mooncake,
    load_servegen_clients,
    load_servegen_lengths,
    lorenz_shares,
    servegen_arrivals,
    synthetic_market,
    zipf_shares,
)

__all__ = [
    "MODEL_CATALOG",
    "SLO",
    "Autoscaler",
    "AutoscalerView",
    "Calibration",
    "LengthTrace",
    "LoadModel",
    "Lorenz",
    "Market",
    "MarketModel",
    "ModelCost",
    "ModelSpec",
    "PerfParams",
    "Requests",
    "ScaleAction",
    "ServingPolicy",
    "ServingResult",
    "ServingSim",
    "StepCost",
    "TemporalMarket",
    "active_models_expected",
    "active_models_observed",
    "attainment",
    "calibrated_market",
    "cost_summary",
    "dedicated_sizing",
    "diurnal_profile",
    "fit_zipf_tail",
    "genai_popularity",
    "get_model",
    "gpu_lorenz",
    "gpus_needed",
    "gpus_over_time",
    "instance_capacity",
    "load_azure_llm",
    "load_genai_load_latencies",
    "load_genai_requests",
    "load_mooncake",
    "load_servegen_clients",
    "load_servegen_lengths",
    "lorenz_shares",
    "make_serving_policy",
    "min_tensor_parallel",
    "model_cost",
    "model_lorenz",
    "per_gpu",
    "per_model",
    "register_model",
    "register_serving_policy",
    "servegen_arrivals",
    "serving_policy_names",
    "simulate",
    "slo_met",
    "summary",
    "synthetic_market",
    "tail_share",
    "temporal_market",
    "zipf_shares",
]
