"""LLM architectures the serving simulator knows: parameter count, layer shapes, KV-cache size.

This module owns :class:`ModelSpec` (one transformer's shape, from its public
``config.json``), the built-in catalogue :data:`MODEL_CATALOG`, lookup
(:func:`get_model`), registration (:func:`register_model`) and
:func:`min_tensor_parallel`, the sizing rule that says how many devices one
instance of a model needs.

Derived sizes (all bytes, BF16 weights and KV cache unless ``dtype_bytes`` says otherwise):

* weights: ``params * dtype_bytes``;
* KV cache per token: ``2 (K and V) * n_layers * n_kv_heads * head_dim * dtype_bytes``
  (grouped-query attention stores ``n_kv_heads`` heads, not ``n_heads``).

Catalogue values are the architecture fields of each model's Hugging Face
``config.json`` and the parameter count of its model card (grade [S]: recalled from
the public cards, spot-checked against copies of ``config.json`` found in public
repositories); see ``docs/serving.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

from clustersim.errors import ConfigError, UnknownNameError

__all__ = [
    "MODEL_CATALOG",
    "ModelSpec",
    "get_model",
    "min_tensor_parallel",
    "model_names",
    "register_model",
]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shape of one decoder-only transformer.

    Attributes:
        name: catalogue name, e.g. ``"Qwen2.5-7B"``.
        params: total parameter count (weights read per forward pass for a dense model).
        n_layers: transformer blocks.
        hidden: model width ``d_model``.
        n_heads: query heads.
        n_kv_heads: key/value heads (``== n_heads`` for multi-head attention).
        head_dim: width of one attention head.
        dtype_bytes: bytes per weight and per KV element (2 = BF16/FP16).
        source: citation key explained in ``docs/serving.md``.
    """

    name: str
    params: float
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    dtype_bytes: int = 2
    source: str = "user"

    def __post_init__(self) -> None:
        who = f"model '{self.name}'"
        if not self.name or any(c.isspace() for c in self.name):
            raise ConfigError(f"{who}: name must be non-empty without whitespace")
        for f in ("params", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim"):
            v = getattr(self, f)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
                raise ConfigError(f"{who}: field '{f}' must be a positive number, got {v!r}")
        if self.dtype_bytes not in (1, 2, 4):
            raise ConfigError(f"{who}: field 'dtype_bytes' must be 1, 2 or 4")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{who}: n_heads must be a multiple of n_kv_heads")

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights (``params * dtype_bytes``)."""
        return float(self.params) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token occupies: ``2 * n_layers * n_kv_heads * head_dim * dtype``."""
        return float(2 * self.n_layers * self.n_kv_heads * self.head_dim * self.dtype_bytes)

    @property
    def attn_flops_per_ctx_token(self) -> float:
        """FLOPs one new token spends attending to one cached token.

        ``4 * n_layers * n_heads * head_dim``: ``2 * d_attn`` for the ``q.k`` dot
        product and ``2 * d_attn`` for the weighted sum of ``v`` (multiply-add = 2 FLOPs).
        """
        return float(4 * self.n_layers * self.n_heads * self.head_dim)


def _m(
    name: str, params: float, layers: int, hidden: int, heads: int, kv: int, hd: int
) -> ModelSpec:
    return ModelSpec(name, params, layers, hidden, heads, kv, hd, 2, "HF-CONFIG[S]")


_CATALOG: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _m("Qwen2.5-0.5B", 0.49e9, 24, 896, 14, 2, 64),
        _m("Qwen1.5-1.8B", 1.84e9, 24, 2048, 16, 16, 128),
        _m("Qwen2.5-1.5B", 1.54e9, 28, 1536, 12, 2, 128),
        _m("Qwen2.5-3B", 3.09e9, 36, 2048, 16, 2, 128),
        _m("Qwen2.5-7B", 7.61e9, 28, 3584, 28, 4, 128),
        _m("Qwen2.5-14B", 14.7e9, 48, 5120, 40, 8, 128),
        _m("Qwen2.5-32B", 32.5e9, 64, 5120, 40, 8, 128),
        _m("Qwen2.5-72B", 72.7e9, 80, 8192, 64, 8, 128),
        _m("Llama-2-7B", 6.74e9, 32, 4096, 32, 32, 128),
        _m("Llama-2-13B", 13.0e9, 40, 5120, 40, 40, 128),
        _m("Llama-3.1-8B", 8.03e9, 32, 4096, 32, 8, 128),
        _m("Llama-3.1-70B", 70.6e9, 80, 8192, 64, 8, 128),
    )
}

MODEL_CATALOG = MappingProxyType(_CATALOG)
"""Name -> :class:`ModelSpec`; read-only live view (see :func:`register_model`)."""


def model_names() -> list[str]:
    """Names of all catalogue models, sorted."""
    return sorted(_CATALOG)


def get_model(name: str) -> ModelSpec:
    """Return the catalogue model called ``name`` (exact name, case-insensitive).

    Raises:
        UnknownNameError: no such model (the message suggests the closest name).
    """
    for k, v in _CATALOG.items():
        if k.casefold() == str(name).casefold():
            return v
    raise UnknownNameError("model", str(name), _CATALOG)


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add ``spec`` to the catalogue; an existing name needs ``replace=True``."""
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"register_model needs a ModelSpec, got {type(spec).__name__}")
    if spec.name in _CATALOG and not replace:
        raise ConfigError(f"model '{spec.name}' is already registered; pass replace=True")
    _CATALOG[spec.name] = spec


def min_tensor_parallel(
    model: ModelSpec,
    memory_bytes: float,
    *,
    memory_utilization: float = 0.9,
    min_kv_fraction: float = 0.1,
    max_tp: int = 8,
) -> int:
    """Smallest power-of-two tensor-parallel degree whose devices hold the model.

    Rule: the weights shard evenly over ``tp`` devices; an instance fits when
    ``weight_bytes / tp <= memory_utilization * memory_bytes * (1 - min_kv_fraction)``,
    i.e. at least ``min_kv_fraction`` of the usable memory is left for the KV cache.
    ``memory_utilization`` mirrors vLLM's ``gpu_memory_utilization`` (default 0.9).

    Raises:
        ConfigError: the model does not fit even at ``max_tp``.
    """
    usable = memory_utilization * memory_bytes * (1.0 - min_kv_fraction)
    tp = 1
    while tp <= max_tp:
        if model.weight_bytes / tp <= usable:
            return tp
        tp *= 2
    need = math.ceil(model.weight_bytes / usable)
    raise ConfigError(
        f"model '{model.name}' ({model.weight_bytes / 1e9:.1f} GB) needs about {need} devices of "
        f"{memory_bytes / 1e9:.0f} GB; raise max_tp (now {max_tp}) or use a larger device"
    )
