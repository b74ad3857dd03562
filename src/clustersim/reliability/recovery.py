"""Recovery pipeline, spare pools and the top-level :class:`ReliabilityConfig`.

Owns the configuration of what happens after a failure hits a job:

1. detection (``detection`` for crashes, ``hang_detection`` for hangs),
2. teardown of the job,
3. rescheduling: ``reschedule`` latency, then replacements for drained nodes
   from warm spares (``hot_swap``), cold reserve nodes (``reserve_provision``) or
   -- when the pools are empty -- the first nodes back from repair,
4. restart (process launch, communicator init, compile),
5. checkpoint load (from the checkpoint cost model, plus ``load_extra``),

and the two presets used by the experiments: :func:`baseline_config` (Meta-RSC
style: periodic health checks, 10-minute NCCL timeout, full requeue, 5-minute
restart, synchronous checkpoints to storage) and :func:`fast_config`
(ByteRobust-style: second-level detection, in-place restart and warm standby,
in-memory checkpoints). Each default value is cited in ``docs/reliability.md``.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from clustersim.reliability.checkpoint import CheckpointPolicy, InMemoryCheckpoint
from clustersim.reliability.distributions import Duration, Fixed, Uniform
from clustersim.reliability.failures import FailureModel

META_HEALTH_CHECK_PERIOD = 300.0
"""Meta RSC health checks run every 5 minutes (HPCA'25): a crash is seen within one period."""
PYTORCH_NCCL_TIMEOUT = 600.0
"""torch.distributed default collective timeout for NCCL: 10 minutes (hangs are seen after it)."""
META_U0 = 300.0
"""Restart overhead u0 = 5 min used by Meta to compare the closed form with real jobs."""
META_QUEUE_AFTER_FAILURE = 60.0
"""1-minute queue after a failure in Meta's 8,000-GPU ETTR example (HPCA'25)."""
BYTEROBUST_WARM_STANDBY_SPEEDUP = 10.87
"""ByteRobust (SOSP'25): warm-standby recovery 10.87x faster than a full requeue."""
DELTA_OVERPROVISION = 0.05
"""Delta GPU-resilience study: ~5 % overprovisioning needed to absorb GPU failures."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RecoveryPipeline(_Model):
    """Stage durations of a recovery (each a distribution; a number means fixed seconds).

    ``restart_in_place``: when no node of the job needs repair (e.g. a software
    crash) the job restarts on the same nodes and skips rescheduling; otherwise
    every interruption goes through the scheduler.
    """

    detection: Duration = Field(
        default_factory=lambda: Uniform(low=0.0, high=META_HEALTH_CHECK_PERIOD)
    )
    hang_detection: Duration = Field(default_factory=lambda: Fixed(value=PYTORCH_NCCL_TIMEOUT))
    teardown: Duration = Field(default_factory=lambda: Fixed(value=0.0))
    reschedule: Duration = Field(default_factory=lambda: Fixed(value=META_QUEUE_AFTER_FAILURE))
    restart: Duration = Field(default_factory=lambda: Fixed(value=META_U0))
    load_extra: Duration = Field(default_factory=lambda: Fixed(value=0.0))
    restart_in_place: bool = False


class SparePool(_Model):
    """Nodes beyond the job(s): warm (hot) spares and a cold reserve.

    Counts are absolute (``hot_spares``, ``reserve_nodes``) or fractions of the
    jobs' nodes (rounded up) when the count is ``None``. Warm spares are swapped
    in after ``hot_swap``; reserve nodes need ``reserve_provision``. After a
    recovery the warm pool is refilled from healthy reserve nodes (lowest node id
    first), each warm ``reserve_provision`` later. Repaired nodes return cold.
    """

    hot_spares: int | None = Field(default=None, ge=0)
    hot_spare_fraction: float = Field(default=0.0, ge=0.0)
    reserve_nodes: int | None = Field(default=None, ge=0)
    reserve_fraction: float = Field(default=DELTA_OVERPROVISION, ge=0.0)
    hot_swap: Duration = Field(default_factory=lambda: Fixed(value=0.0))
    reserve_provision: Duration = Field(default_factory=lambda: Fixed(value=0.0))

    def counts(self, job_nodes: int) -> tuple[int, int]:
        """(warm spares, reserve nodes) for jobs holding ``job_nodes`` nodes in total."""
        hot = self.hot_spares
        if hot is None:
            hot = math.ceil(self.hot_spare_fraction * job_nodes - 1e-9)
        res = self.reserve_nodes
        if res is None:
            res = math.ceil(self.reserve_fraction * job_nodes - 1e-9)
        return hot, res


class ReliabilityConfig(_Model):
    """Everything the reliability simulator needs besides the job list and the horizon.

    Embeds as ``reliability: {...}`` in a scenario YAML. The defaults are the
    baseline: Meta-RSC failure rates, Meta-style recovery, 5 % cold reserve,
    synchronous checkpoints to Llama-3-class storage at the Young interval.
    """

    failures: FailureModel = Field(default_factory=FailureModel)
    recovery: RecoveryPipeline = Field(default_factory=RecoveryPipeline)
    spares: SparePool = Field(default_factory=SparePool)
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    include_initial_launch: bool = Field(
        default=True, description="count the first launch (restart stage) in wall time"
    )


def baseline_config(**overrides: object) -> ReliabilityConfig:
    """The default configuration (Meta-RSC style recovery); keyword overrides replace fields."""
    return ReliabilityConfig.model_validate(overrides) if overrides else ReliabilityConfig()


def fast_config(failures: FailureModel | None = None) -> ReliabilityConfig:
    """ByteRobust/Gemini-style recovery.

    Detection in 10-30 s for crashes and hangs, in-place restart when nothing
    needs repair, warm standby for the rest (no requeue latency), restart
    u0 / 10.87, in-memory peer checkpoints with an hourly storage tier.
    """
    return ReliabilityConfig(
        failures=failures if failures is not None else FailureModel(),
        recovery=RecoveryPipeline(
            detection=Uniform(low=10.0, high=30.0),
            hang_detection=Uniform(low=10.0, high=30.0),
            teardown=Fixed(value=0.0),
            reschedule=Fixed(value=0.0),
            restart=Fixed(value=META_U0 / BYTEROBUST_WARM_STANDBY_SPEEDUP),
            restart_in_place=True,
        ),
        spares=SparePool(hot_spare_fraction=DELTA_OVERPROVISION, reserve_fraction=0.0),
        checkpoint=CheckpointPolicy(mode="async", policy="young", in_memory=InMemoryCheckpoint()),
    )


__all__ = [
    "BYTEROBUST_WARM_STANDBY_SPEEDUP",
    "DELTA_OVERPROVISION",
    "META_HEALTH_CHECK_PERIOD",
    "META_QUEUE_AFTER_FAILURE",
    "META_U0",
    "PYTORCH_NCCL_TIMEOUT",
    "RecoveryPipeline",
    "ReliabilityConfig",
    "SparePool",
    "baseline_config",
    "fast_config",
]
