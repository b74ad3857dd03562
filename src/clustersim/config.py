"""Scenario configuration: the pydantic v2 models of a simulation run, loaded from YAML.

Units, stated once for the whole project:

* time: **seconds** (trace timestamps are converted to seconds from the first arrival);
* sizes: **bytes**; bandwidth: **bytes per second**; latency: seconds;
* power: watts; energy: joules unless a name says ``_kwh``; money: US dollars.

A scenario names a cluster, a workload, a scheduler, a seed and an optional
horizon. Every model rejects unknown keys with a "did you mean" hint, and every
error raised by :func:`load_scenario` names the file, the line and the dotted
field, e.g. ``scenario.yaml:7: cluster.nodes: Input should be greater than 0``.
Relative paths inside a scenario (trace, topology) are resolved against the
scenario file's folder first and then the current directory.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from clustersim.errors import ClusterSimError, ConfigError
from clustersim.perf import PerfConfig
from clustersim.reliability.failures import FailureModel

DEFAULT_SCENARIO = "default.yaml"
"""Name of the embedded scenario that ``clustersim run`` uses without arguments."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ClusterConfig(_Model):
    """The cluster: either ``nodes`` x ``gpus_per_node`` of one ``device``, or a topology file.

    ``network: ideal`` means placement never slows a job (the convention of
    simulators that ignore topology); ``network: topology`` lets the speed model
    charge for communication across the levels a placement spans.
    """

    nodes: int | None = Field(default=None, gt=0, description="number of nodes")
    gpus_per_node: int | None = Field(default=None, gt=0, description="devices per node")
    device: str = Field(default="V100", description="device model from the catalogue")
    network: Literal["ideal", "topology"] = "ideal"
    topology: str | None = Field(default=None, description="path to a topology YAML file")

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        from clustersim.hardware import get_device

        try:
            return get_device(v).name
        except ClusterSimError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _one_shape(self) -> ClusterConfig:
        if self.topology is None and (self.nodes is None or self.gpus_per_node is None):
            raise ValueError("give either 'topology: FILE' or both 'nodes' and 'gpus_per_node'")
        if self.topology is not None and (self.nodes is not None or self.gpus_per_node is not None):
            raise ValueError("'topology' and 'nodes'/'gpus_per_node' are exclusive; keep one")
        return self


class SyntheticConfig(_Model):
    """Seeded synthetic job stream (see :mod:`clustersim.workload.synthetic`)."""

    jobs: int = Field(default=1000, gt=0)
    arrival_rate: float = Field(default=1 / 60, gt=0, description="jobs per second (Poisson)")
    duration_median: float = Field(default=1800.0, gt=0, description="seconds")
    duration_sigma: float = Field(default=1.5, ge=0, description="lognormal shape of durations")
    max_duration: float = Field(default=30 * 86400.0, gt=0, description="seconds, truncation")
    gpu_mix: dict[int, float] = Field(
        default_factory=lambda: {1: 0.70, 2: 0.10, 4: 0.10, 8: 0.08, 16: 0.02},
        description="devices requested -> probability",
    )

    @model_validator(mode="after")
    def _mix(self) -> SyntheticConfig:
        if not self.gpu_mix or any(k <= 0 or v < 0 for k, v in self.gpu_mix.items()):
            raise ValueError("gpu_mix needs positive device counts and non-negative weights")
        if sum(self.gpu_mix.values()) <= 0:
            raise ValueError("gpu_mix weights sum to zero")
        return self


class WorkloadConfig(_Model):
    """Where jobs come from and how the trace is filtered."""

    trace: str | None = Field(default=None, description="path to the trace file")
    format: Literal["csv", "philly", "openb", "synthetic"] = "csv"
    virtual_cluster: list[str] | None = Field(
        default=None, description="philly: keep only these virtual clusters"
    )
    limit: int | None = Field(default=None, gt=0, description="keep the first N jobs (by arrival)")
    load_scale: float = Field(
        default=1.0, gt=0, description="multiplies the arrival rate (divides inter-arrival times)"
    )
    oversized: Literal["reject", "skip"] = Field(
        default="reject",
        description="a job wider than the cluster: fail up front, or skip it and count it",
    )
    synthetic: SyntheticConfig | None = None

    @model_validator(mode="after")
    def _source(self) -> WorkloadConfig:
        if self.format == "synthetic":
            if self.trace is not None:
                raise ValueError("format 'synthetic' takes no 'trace'; remove it")
        elif self.trace is None:
            raise ValueError(f"format '{self.format}' needs 'trace: PATH'")
        return self


class SchedulerConfig(_Model):
    """A registered scheduling policy, its placement rule and parameters."""

    name: str = "fifo"
    placement: str = Field(default="first_fit", description="registered placement policy")
    params: dict[str, Any] = Field(default_factory=dict)
    interval: float | None = Field(
        default=None, gt=0, description="seconds between extra scheduling rounds (round-based)"
    )


class PreemptionConfig(_Model):
    """Cost of preempting and resuming a job (both 0 unless the scenario sets them)."""

    checkpoint_s: float = Field(
        default=0.0, ge=0, description="seconds a preempted job keeps its devices to save state"
    )
    restore_s: float = Field(
        default=0.0, ge=0, description="seconds a resumed job spends restoring before progressing"
    )


class ReclaimConfig(_Model):
    """From ``time`` on, another tenant (e.g. a serving pool) holds ``nodes`` whole nodes.

    A step of a schedule (each entry sets the holding, it does not add). Growing takes
    idle nodes first (ties: lowest node index) and preempts the training jobs on taken
    nodes like a scheduler's preemption (``preemption.checkpoint_s`` / ``restore_s``
    apply); shrinking returns the most recently taken nodes first. See docs/mixed.md.
    """

    time: float = Field(ge=0, description="seconds after the first arrival")
    nodes: int = Field(ge=0, description="whole nodes held from then on")


class FailuresConfig(_Model):
    """Node outages during the run (see :mod:`clustersim.reliability` and docs/reliability.md).

    ``model`` is the reliability module's failure model (default: Meta's
    research-cluster rates; ``model.trace`` replays a CSV failure trace
    instead). A failure interrupts every job on the failed nodes: work since
    the job's last checkpoint (taken every ``checkpoint_interval_s`` seconds of
    progress, or at a preemption) is lost, and the job re-enters the queue
    after ``recovery_s`` (detection + teardown). Failure times are relative
    to the first arrival. Periodic checkpoints cost no time here; the
    reliability module's simulator models their cost for large gang jobs.
    """

    model: FailureModel = Field(default_factory=FailureModel)
    checkpoint_interval_s: float | None = Field(
        default=3600.0, gt=0, description="seconds of progress between checkpoints (None: none)"
    )
    recovery_s: float = Field(default=0.0, ge=0, description="detection + teardown seconds")
    horizon_s: float | None = Field(
        default=None, gt=0, description="draw failures up to this time (default: long enough)"
    )


class PowerConfig(_Model):
    """Facility power and an optional cap (see docs/hetero-power-economics.md).

    Draw = PUE x (node overhead + per device: idle power, or its active power
    while allocated, scaled by its share). With ``cap_w`` or ``cap_fraction``
    (of the draw with every device busy) the engine rejects any start that
    would exceed the cap, so the cap holds at every instant; policies read
    ``view.power_headroom_w`` (e.g. ``power_aware``).
    """

    pue: float = Field(default=1.58, ge=1.0, description="power usage effectiveness")
    node_overhead_fraction: float = Field(
        default=0.275, ge=0, description="static node power as a share of its devices' TDP"
    )
    power_limit_fraction: float = Field(
        default=1.0, gt=0, le=1, description="device power limit as a share of TDP"
    )
    cap_w: float | None = Field(default=None, gt=0, description="facility power cap (W)")
    cap_fraction: float | None = Field(
        default=None, gt=0, le=1, description="cap as a share of the all-busy draw"
    )

    @model_validator(mode="after")
    def _one_cap(self) -> PowerConfig:
        if self.cap_w is not None and self.cap_fraction is not None:
            raise ValueError("give 'cap_w' or 'cap_fraction', not both")
        return self


class Scenario(_Model):
    """One simulation run."""

    name: str = "scenario"
    seed: int = Field(default=0, ge=0)
    horizon: float | None = Field(default=None, gt=0, description="stop at this time (s)")
    cluster: ClusterConfig
    workload: WorkloadConfig
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    preemption: PreemptionConfig = Field(default_factory=PreemptionConfig)
    failures: FailuresConfig | None = None
    reclaims: list[ReclaimConfig] = Field(
        default_factory=list,
        description="nodes another tenant (a serving pool) takes over time (docs/mixed.md)",
    )
    power: PowerConfig | None = None
    perf: PerfConfig | None = Field(
        default=None, description="communication speed model (cluster.network: topology)"
    )
    base_dir: str | None = Field(
        default=None, description="folder relative paths resolve against (set by the loader)"
    )

    def resolve_path(self, value: str) -> Path:
        """Resolve a path from this scenario: absolute, relative to ``base_dir``, or to cwd."""
        p = Path(value).expanduser()
        if p.is_absolute():
            return p
        candidates = []
        if self.base_dir is not None:
            candidates.append(Path(self.base_dir) / p)
        candidates.append(Path.cwd() / p)
        for c in candidates:
            if c.exists():
                return c.resolve()
        return candidates[0]

    def with_overrides(self, overrides: dict[str, Any]) -> Scenario:
        """Return a copy with dotted-key overrides applied and re-validated."""
        data = self.model_dump()
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return validate_scenario(data, source="<overrides>")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"]`` for ``key = "a.b"``, creating missing sections."""
    parts = key.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if nxt is None:
            nxt = {}
            cur[part] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
        cur = nxt
    cur[parts[-1]] = value


# --------------------------------------------------------------------------- loading


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map dotted key paths of a YAML mapping to their 1-based line numbers."""
    import yaml

    index: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, val in node.value:
                sub = (*path, str(key.value))
                index[sub] = key.start_mark.line + 1
                walk(val, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = (*path, str(i))
                index[sub] = item.start_mark.line + 1
                walk(item, sub)

    if root is not None:
        walk(root, ())
    return index


def _model_for(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Scenario
    for part in path:
        if model is None:
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        nxt = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                nxt = cand
        model = nxt
    return model


def _format_errors(exc: ValidationError, source: str, lines: dict[tuple[str, ...], int]) -> str:
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        # pydantic puts the validator name for model-level errors; drop non-field parts
        loc = tuple(p for p in loc if not p.startswith("function-"))
        dotted = ".".join(loc) or "<top level>"
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        where = f"{source}:{line}" if line is not None else source
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = _model_for(tuple(loc[:-1]))
            known = sorted(parent.model_fields) if parent is not None else []
            known = [k for k in known if k != "base_dir"]
            hint = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
            msg = f"unknown key '{loc[-1]}'"
            msg += f"; did you mean '{hint[0]}'?" if hint else ""
            msg += f" (allowed: {', '.join(known)})"
        elif err["type"] == "missing":
            msg = "missing required field"
        out.append(f"{where}: {dotted}: {msg}")
    return "\n".join(out)


def validate_scenario(
    data: Any, source: str = "<scenario>", text: str | None = None, base_dir: str | None = None
) -> Scenario:
    """Validate a mapping as a :class:`Scenario`; errors name ``source``, line and field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario must be a YAML mapping, got {type(data).__name__}")
    if base_dir is not None and "base_dir" not in data:
        data = {**data, "base_dir": base_dir}
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = _line_index(text) if text is not None else {}
        raise ConfigError(_format_errors(exc, source, lines)) from None


def load_yaml(path: str | Path) -> tuple[Any, str]:
    """Read a YAML file with ``safe_load``; errors name the file and line."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}{line}: malformed YAML: {problem}") from None


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Load a scenario YAML file, or the embedded default scenario when ``path`` is None."""
    if path is None:
        ref = resources.files("clustersim") / "data" / DEFAULT_SCENARIO
        with resources.as_file(ref) as p:
            data, text = load_yaml(p)
            return validate_scenario(
                data, source=f"<embedded {DEFAULT_SCENARIO}>", text=text, base_dir=str(p.parent)
            )
    p = Path(path)
    data, text = load_yaml(p)
    return validate_scenario(data, source=str(p), text=text, base_dir=str(p.resolve().parent))


def scenario_to_yaml(scenario: Scenario) -> str:
    """The resolved scenario as YAML (what ``DIR/config.yaml`` holds)."""
    import yaml

    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
