"""Reliability side of clustersim: failures, recovery, checkpoints and effective training time.

Public API:

* configuration (pydantic, ``extra='forbid'``): :class:`ReliabilityConfig` with
  :class:`FailureModel` / :class:`FailureSource`, :class:`RecoveryPipeline`,
  :class:`SparePool`, :class:`CheckpointPolicy` / :class:`InMemoryCheckpoint`;
  presets :func:`baseline_config`, :func:`fast_config`, :func:`meta_rsc_sources`,
  :func:`llama3_table5_sources`, :func:`alibaba_hpn_network_sources`;
* failure events for the cluster engine: :class:`ClusterLayout`,
  :class:`FailureEvent`, :func:`generate_failures`, :func:`load_failure_trace`,
  :func:`write_failure_trace`, :func:`job_failure_rate`;
* formulas: :func:`young_interval`, :func:`daly_interval`, :func:`meta_expected_ettr`,
  :func:`availability_optimal_interval`;
* the fast gang-job simulator :func:`simulate` (:class:`JobSpec`) and its results
  :class:`ReliabilityResult` / :class:`JobMetrics`.

See ``docs/reliability.md`` for the model, the sources of every default and the
experiments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names for type checkers; at run time they load on first use
    from clustersim.reliability.checkpoint import (
        CheckpointPolicy,
        InMemoryCheckpoint,
        availability_optimal_interval,
        checkpoint_costs,
        daly_interval,
        meta_expected_ettr,
        young_interval,
    )
    from clustersim.reliability.distributions import (
        Exponential,
        Fixed,
        Lognormal,
        Uniform,
        Weibull,
    )
    from clustersim.reliability.failures import (
        ClusterLayout,
        FailureEvent,
        FailureModel,
        FailureSource,
        alibaba_hpn_network_sources,
        generate_failures,
        job_failure_rate,
        llama3_table5_sources,
        load_failure_trace,
        meta_rsc_sources,
        write_failure_trace,
    )
    from clustersim.reliability.metrics import LOST_CATEGORIES, JobMetrics, ReliabilityResult
    from clustersim.reliability.recovery import (
        RecoveryPipeline,
        ReliabilityConfig,
        SparePool,
        baseline_config,
        fast_config,
    )
    from clustersim.reliability.sim import JobSpec, simulate

# Submodules load on first use (PEP 562): the scenario schema needs only the failure
# model, and importing the simulator, recovery and metrics modules for every run would
# cost ~15 ms of start-up.
_LAZY = {
    "CheckpointPolicy": "checkpoint",
    "ClusterLayout": "failures",
    "Exponential": "distributions",
    "FailureEvent": "failures",
    "FailureModel": "failures",
    "FailureSource": "failures",
    "Fixed": "distributions",
    "InMemoryCheckpoint": "checkpoint",
    "JobMetrics": "metrics",
    "JobSpec": "sim",
    "LOST_CATEGORIES": "metrics",
    "Lognormal": "distributions",
    "RecoveryPipeline": "recovery",
    "ReliabilityConfig": "recovery",
    "ReliabilityResult": "metrics",
    "SparePool": "recovery",
    "Uniform": "distributions",
    "Weibull": "distributions",
    "alibaba_hpn_network_sources": "failures",
    "availability_optimal_interval": "checkpoint",
    "baseline_config": "recovery",
    "checkpoint_costs": "checkpoint",
    "daly_interval": "checkpoint",
    "fast_config": "recovery",
    "generate_failures": "failures",
    "job_failure_rate": "failures",
    "llama3_table5_sources": "failures",
    "load_failure_trace": "failures",
    "meta_expected_ettr": "checkpoint",
    "meta_rsc_sources": "failures",
    "simulate": "sim",
    "write_failure_trace": "failures",
    "young_interval": "checkpoint",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "LOST_CATEGORIES",
    "CheckpointPolicy",
    "ClusterLayout",
    "Exponential",
    "FailureEvent",
    "FailureModel",
    "FailureSource",
    "Fixed",
    "InMemoryCheckpoint",
    "JobMetrics",
    "JobSpec",
    "Lognormal",
    "RecoveryPipeline",
    "ReliabilityConfig",
    "ReliabilityResult",
    "SparePool",
    "Uniform",
    "Weibull",
    "alibaba_hpn_network_sources",
    "availability_optimal_interval",
    "baseline_config",
    "checkpoint_costs",
    "daly_interval",
    "fast_config",
    "generate_failures",
    "job_failure_rate",
    "llama3_table5_sources",
    "load_failure_trace",
    "meta_expected_ettr",
    "meta_rsc_sources",
    "simulate",
    "write_failure_trace",
    "young_interval",
]
