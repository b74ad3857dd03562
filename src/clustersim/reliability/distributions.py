"""Duration distributions of the reliability model (stage times, repair times).

Owns the small pydantic models that describe a random duration in a scenario:
``fixed``, ``exponential``, ``lognormal``, ``uniform`` and ``weibull``. Each
can draw vectorised samples from a caller's :class:`numpy.random.Generator` and
report its mean (used by the closed forms and the Young/Daly interval). A bare
number in YAML (``restart: 300``) means a fixed duration. Units: seconds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

FloatArray = NDArray[np.float64]


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:  # pragma: no cover
        """Draw ``n`` independent durations (seconds, all >= 0)."""
        raise NotImplementedError

    def mean(self) -> float:  # pragma: no cover
        """Expected duration in seconds."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator) -> float:
        """One duration in seconds."""
        return float(self.sample(rng, 1)[0])


class Fixed(_Dist):
    """Always ``value`` seconds. Draws nothing from the generator."""

    kind: Literal["fixed"] = "fixed"
    value: float = Field(default=0.0, ge=0.0, description="seconds")

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return np.full(n, self.value, dtype=np.float64)

    def mean(self) -> float:
        return self.value


class Exponential(_Dist):
    """Exponential with the given ``mean`` (seconds)."""

    kind: Literal["exponential"] = "exponential"
    mean_s: float = Field(gt=0.0, alias="mean", description="seconds")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.exponential(self.mean_s, n)

    def mean(self) -> float:
        return self.mean_s


class Lognormal(_Dist):
    """Lognormal given by its ``median`` (seconds) and log-space ``sigma``.

    Optional ``max`` truncates by clipping (a repair shop's escalation limit).
    """

    kind: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0.0, description="seconds")
    sigma: float = Field(ge=0.0, description="standard deviation of log(duration)")
    max: float | None = Field(default=None, gt=0.0, description="clip at this many seconds")

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        x = rng.lognormal(math.log(self.median), self.sigma, n)
        return np.minimum(x, self.max) if self.max is not None else x

    def mean(self) -> float:
        m = self.median * math.exp(self.sigma**2 / 2.0)
        # Clipping lowers the mean; exact value needs the normal CDF, so report the bound.
        return min(m, self.max) if self.max is not None else m


class Uniform(_Dist):
    """Uniform on ``[low, high]`` seconds."""

    kind: Literal["uniform"] = "uniform"
    low: float = Field(ge=0.0)
    high: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"uniform needs low <= high, got low={self.low}, high={self.high}")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.uniform(self.low, self.high, n)

    def mean(self) -> float:
        return (self.low + self.high) / 2.0


class Weibull(_Dist):
    """Weibull with ``shape`` k and ``scale`` (seconds): mean = scale * Gamma(1 + 1/k)."""

    kind: Literal["weibull"] = "weibull"
    shape: float = Field(gt=0.0)
    scale: float = Field(gt=0.0, description="seconds")

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return self.scale * rng.weibull(self.shape, n)

    def mean(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)


def _number_is_fixed(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return {"kind": "fixed", "value": float(value)}
    return value


Duration = Annotated[
    Fixed | Exponential | Lognormal | Uniform | Weibull,
    Field(discriminator="kind"),
    BeforeValidator(_number_is_fixed),
]
"""A random duration in seconds; a bare number means :class:`Fixed`."""


def fixed(value: float) -> Fixed:
    """Shorthand for ``Fixed(value=value)``."""
    return Fixed(value=value)


__all__ = [
    "Duration",
    "Exponential",
    "Fixed",
    "FloatArray",
    "Lognormal",
    "Uniform",
    "Weibull",
    "fixed",
]
