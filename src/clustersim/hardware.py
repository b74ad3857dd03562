"""Device catalogue: the accelerators clustersim can model and their published numbers.

This module owns :class:`DeviceSpec` (compute, memory, power, links, price of one
device), the built-in catalogue :data:`DEVICES`, name lookup with aliases
(:func:`get_device`) and user registration (:func:`register_device`).

Units: FLOP/s via :attr:`DeviceSpec.flops` (``bf16_tflops`` is in 1e12 FLOP/s),
bytes, bytes/s (per device, per direction), watts, USD. Memory sizes are what the
vendor means: NVIDIA/Huawei/Baidu "GB" = 1e9 bytes, AWS "GiB" = 2**30 bytes.

Every number, its source and its grade ([P] primary, [S] secondary, [D] derived,
[U] unconfirmed) is listed in ``docs/hardware.md``; ``DeviceSpec.source`` holds the
short citation keys that page explains.

Lookup rule: a name is normalised by ``casefold()`` and removing spaces, ``-`` and
``_``; the normalised key is looked up among canonical names and aliases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from clustersim.errors import ConfigError, UnknownNameError

__all__ = [
    "DEVICES",
    "IDLE_FRACTION_OF_TDP",
    "DeviceSpec",
    "UndisclosedDeviceError",
    "device_names",
    "get_device",
    "register_device",
]

IDLE_FRACTION_OF_TDP = 0.12
"""Idle power as a fraction of TDP used for every built-in device (no sourced
per-device idle figure exists). literature.md §4.3 gives P_idle ~ 10-15 % of TDP [U];
0.12 is inside that range."""

_GB = 10**9
_GIB = 2**30
_TB_S = 1e12  # vendor "TB/s" = 1e12 bytes/s
_GB_S = 1e9
_GBIT_S = 1e9 / 8  # one Gb/s in bytes/s

# PCIe per direction, x16: GT/s x 16 lanes x 128/130 encoding / 8 bits  [D]
_PCIE3_X16 = 8e9 * 16 * 128 / 130 / 8  # 15.75e9 B/s
_PCIE4_X16 = 16e9 * 16 * 128 / 130 / 8  # 31.5e9 B/s

# Price rule for devices without a public cloud list price [D]: rent scales with the
# purchase price at H100's ratio (AWS p5 on-demand before the June 2025 cut / H100 capex).
_H100_PRICE = 98.32 / 8  # USD per GPU-hour, p5.48xlarge on-demand, pre-June-2025 [S]
_H100_CAPEX = 30_000.0  # USD, public estimate [U]
_PRICE_PER_CAPEX = _H100_PRICE / _H100_CAPEX  # USD per hour per USD of capex


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One accelerator model.

    Attributes:
        name: canonical name, e.g. ``"H100"`` (no whitespace).
        vendor: manufacturer.
        bf16_tflops: dense BF16 (FP16 where the device has no BF16) TFLOPS, 1e12 FLOP/s.
        memory_bytes: device memory capacity in bytes (vendor's unit, see module doc).
        memory_bw: device memory bandwidth, bytes/s.
        tdp_w: board power, watts.
        idle_w: idle power, watts (``0 <= idle_w <= tdp_w``).
        scale_up_bw: bytes/s per device per direction on the scale-up link
            (NVLink/HCCS/UB/NeuronLink; PCIe for devices without one).
        scale_out_bw: bytes/s per device per direction on the scale-out NIC.
        price_per_hour: USD per device-hour, on-demand list price (``>= 0``).
        capex_usd: purchase price per device, USD (``>= 0``).
        training: False only for devices that cannot run training.
        source: short citation keys explained in ``docs/hardware.md``.

    Construction validates every field and raises :class:`ConfigError` naming the
    device and the field.
    """

    name: str
    vendor: str
    bf16_tflops: float
    memory_bytes: int
    memory_bw: float
    tdp_w: float
    idle_w: float
    scale_up_bw: float
    scale_out_bw: float
    price_per_hour: float
    capex_usd: float
    training: bool
    source: str

    def __post_init__(self) -> None:
        who = f"device '{self.name}'"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"device name must be a non-empty string, got {self.name!r}")
        if any(c.isspace() for c in self.name):
            raise ConfigError(f"{who}: name must not contain whitespace")
        for text_field in ("vendor", "source"):
            value = getattr(self, text_field)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{who}: field '{text_field}' must be a non-empty string")
        if isinstance(self.memory_bytes, bool) or not isinstance(self.memory_bytes, int):
            raise ConfigError(
                f"{who}: field 'memory_bytes' must be a whole number of bytes, "
                f"got {self.memory_bytes!r}"
            )
        if not isinstance(self.training, bool):
            raise ConfigError(f"{who}: field 'training' must be true or false")
        positive = {
            "bf16_tflops",
            "memory_bytes",
            "memory_bw",
            "tdp_w",
            "scale_up_bw",
            "scale_out_bw",
        }
        for f in fields(self):
            if f.name in ("name", "vendor", "source", "training"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{who}: field '{f.name}' must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{who}: field '{f.name}' must be finite, got {value!r}")
            if f.name in positive:
                if value <= 0:
                    raise ConfigError(f"{who}: field '{f.name}' must be > 0, got {value!r}")
            elif value < 0:
                raise ConfigError(f"{who}: field '{f.name}' must be >= 0, got {value!r}")
        if self.idle_w > self.tdp_w:
            raise ConfigError(f"{who}: idle_w ({self.idle_w} W) exceeds tdp_w ({self.tdp_w} W)")

    @property
    def flops(self) -> float:
        """Peak dense BF16/FP16 throughput in FLOP/s (``bf16_tflops * 1e12``)."""
        return self.bf16_tflops * 1e12


class UndisclosedDeviceError(UnknownNameError):
    """A device code from a trace whose hardware the trace owner never disclosed.

    Raised by :func:`get_device` for the Alibaba openb codes ``G1``, ``G2``, ``G3``
    unless a device of that name was registered. Catch it as :class:`UnknownNameError`.
    """

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__("device", name, known)
        self.args = (
            f"device '{name}' is an undisclosed Alibaba internal GPU code (openb trace "
            f"G1/G2/G3); clustersim has no spec for it. Map it to a catalogue device in "
            f"the trace loader, or register_device() your own spec under this name. "
            f"Known: {', '.join(self.known)}",
        )


_UNDISCLOSED = frozenset({"g1", "g2", "g3"})

_DEVICES: dict[str, DeviceSpec] = {}
_INDEX: dict[str, str] = {}  # normalised name or alias -> canonical name

DEVICES: Mapping[str, DeviceSpec] = MappingProxyType(_DEVICES)
"""Canonical name -> spec. Read-only live view; :func:`register_device` adds to it."""


def _key(name: str) -> str:
    return name.casefold().replace(" ", "").replace("-", "").replace("_", "")


def device_names() -> list[str]:
    """Canonical names of all known devices, sorted."""
    return sorted(_DEVICES)


def get_device(name: str) -> DeviceSpec:
    """Return the spec for ``name``, a canonical name or alias (see module doc for matching).

    Raises:
        UnknownNameError: no device has that name (message suggests the closest one);
            :class:`UndisclosedDeviceError` for openb's G1/G2/G3.
    """
    canonical = _INDEX.get(_key(name)) if isinstance(name, str) else None
    if canonical is None:
        if isinstance(name, str) and _key(name) in _UNDISCLOSED:
            raise UndisclosedDeviceError(name, _DEVICES)
        raise UnknownNameError("device", str(name), _DEVICES)
    return _DEVICES[canonical]


def register_device(
    spec: DeviceSpec, *, aliases: Iterable[str] = (), replace: bool = False
) -> None:
    """Add ``spec`` to the catalogue under ``spec.name`` and ``aliases``.

    Rule: without ``replace``, any name or alias already known (after normalisation)
    is a :class:`ConfigError`. With ``replace=True`` a device with the same
    normalised name is replaced (its old aliases then resolve to ``spec``) and an
    alias already used by another device is re-pointed to ``spec``. An alias may never
    equal another device's canonical name. Nothing changes if an error is raised.
    """
    if not isinstance(spec, DeviceSpec):
        raise ConfigError(f"register_device needs a DeviceSpec, got {type(spec).__name__}")
    alias_list = [aliases] if isinstance(aliases, str) else list(aliases)
    for a in alias_list:
        if not isinstance(a, str) or not _key(a):
            raise ConfigError(f"device '{spec.name}': alias {a!r} must be a non-empty string")
    name_key = _key(spec.name)
    old = _INDEX.get(name_key)
    if old is not None and not replace:
        raise ConfigError(
            f"device '{spec.name}' is already registered (as '{old}'); "
            "pass replace=True to overwrite it"
        )
    for a in alias_list:
        k = _key(a)
        owner = _INDEX.get(k)
        if owner is None or owner == old or k == name_key:
            continue
        if _key(owner) == k:
            raise ConfigError(f"device '{spec.name}': alias '{a}' is the name of device '{owner}'")
        if not replace:
            raise ConfigError(
                f"device '{spec.name}': alias '{a}' already belongs to device '{owner}'; "
                "pass replace=True to re-point it"
            )
    if old is not None:
        del _DEVICES[old]
        for k, v in _INDEX.items():
            if v == old:
                _INDEX[k] = spec.name
    _DEVICES[spec.name] = spec
    _INDEX[name_key] = spec.name
    for a in alias_list:
        _INDEX[_key(a)] = spec.name


def _builtin(
    name: str,
    vendor: str,
    *,
    tflops: float,
    memory: int,
    mem_bw: float,
    tdp: float,
    up: float,
    out: float,
    price: float,
    capex: float,
    source: str,
    aliases: tuple[str, ...] = (),
    training: bool = True,
) -> None:
    spec = DeviceSpec(
        name=name,
        vendor=vendor,
        bf16_tflops=tflops,
        memory_bytes=memory,
        memory_bw=mem_bw,
        tdp_w=tdp,
        idle_w=IDLE_FRACTION_OF_TDP * tdp,
        scale_up_bw=up,
        scale_out_bw=out,
        price_per_hour=price,
        capex_usd=capex,
        training=training,
        source=source,
    )
    register_device(spec, aliases=aliases)


# Built-in catalogue. Per-field sources and grades: docs/hardware.md (keep in sync;
# tests/test_hardware.py checks the docs table against these values).

_builtin(
    "V100",
    "NVIDIA",
    tflops=125.0,
    memory=32 * _GB,
    mem_bw=900 * _GB_S,
    tdp=300.0,
    up=300 * _GB_S / 2,
    out=100 * _GBIT_S / 2,
    price=31.212 / 8,
    capex=10_000.0,
    source="NV-DS[U] DGX1[U] AWS-OD:p3dn[U] CAPEX-EST[U] IDLE[U]",
    aliases=("V100M32", "V100-SXM2", "V100-SXM2-32GB", "V100-32GB"),
)
_builtin(
    "V100-16GB",
    "NVIDIA",
    tflops=125.0,
    memory=16 * _GB,
    mem_bw=900 * _GB_S,
    tdp=300.0,
    up=300 * _GB_S / 2,
    out=100 * _GBIT_S / 2,
    price=24.48 / 8,
    capex=8_000.0,
    source="NV-DS[U] DGX1[U] AWS-OD:p3[U] CAPEX-EST[U] IDLE[U]",
    aliases=("V100M16", "V100-SXM2-16GB", "V100-16G"),
)
_builtin(
    "P100",
    "NVIDIA",
    tflops=18.7,
    memory=16 * _GB,
    mem_bw=732 * _GB_S,
    tdp=250.0,
    up=_PCIE3_X16,
    out=100 * _GBIT_S / 8,
    price=1.46,
    capex=5_700.0,
    source="NV-DS[U] PCIE[D] PLACEHOLDER:nic[U] GCP-OD[U] CAPEX-EST[U] IDLE[U]",
    aliases=("P100-PCIe", "P100-PCIe-16GB", "Tesla-P100"),
)
_builtin(
    "T4",
    "NVIDIA",
    tflops=65.0,
    memory=16 * _GB,
    mem_bw=320 * _GB_S,
    tdp=70.0,
    up=_PCIE3_X16,
    out=100 * _GBIT_S / 8,
    price=3.912 / 4,
    capex=2_300.0,
    source="NV-DS[U] PCIE[D] AWS-OD:g4dn[U] CAPEX-EST[U] IDLE[U]",
    aliases=("Tesla-T4",),
)
_builtin(
    "A10",
    "NVIDIA",
    tflops=125.0,
    memory=24 * _GB,
    mem_bw=600 * _GB_S,
    tdp=150.0,
    up=_PCIE4_X16,
    out=100 * _GBIT_S / 8,
    price=16.288 / 8,
    capex=3_300.0,
    source="NV-DS[U] PCIE[D] AWS-OD:g5(A10G)[U] CAPEX-EST[U] IDLE[U]",
    aliases=("A10-24GB", "A10-PCIe"),
)
_builtin(
    "A100",
    "NVIDIA",
    tflops=312.0,
    memory=80 * _GB,
    mem_bw=2.039 * _TB_S,
    tdp=400.0,
    up=600 * _GB_S / 2,
    out=200 * _GBIT_S,
    price=32.77 / 8,
    capex=15_000.0,
    source="LIT41[S] LIT31[S] LIT42:p4d-40GB[S] CAPEX-EST[U] IDLE[U]",
    aliases=("A100-SXM", "A100-SXM4", "A100-80GB", "A100-SXM4-80GB"),
)
_builtin(
    "H100",
    "NVIDIA",
    tflops=989.0,
    memory=80 * _GB,
    mem_bw=3.35 * _TB_S,
    tdp=700.0,
    up=900 * _GB_S / 2,
    out=400 * _GBIT_S,
    price=_H100_PRICE,
    capex=_H100_CAPEX,
    source="LIT41[S] LIT31[S] LIT42:p5-pre-2025-06[S] CAPEX-EST[U] IDLE[U]",
    aliases=("H100-SXM", "H100-SXM5", "H100-80GB"),
)
_builtin(
    "H800",
    "NVIDIA",
    tflops=989.0,
    memory=80 * _GB,
    mem_bw=3.35 * _TB_S,
    tdp=700.0,
    up=400 * _GB_S / 2,
    out=400 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 30_000.0,
    capex=30_000.0,
    source="LIT41[U] LIT31[U] PRICE-RULE[D] CAPEX-EST:=H100[U] IDLE[U]",
    aliases=("H800-SXM",),
)
_builtin(
    "H20",
    "NVIDIA",
    tflops=148.0,
    memory=96 * _GB,
    mem_bw=4.0 * _TB_S,
    tdp=400.0,
    up=900 * _GB_S / 2,
    out=400 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 13_500.0,
    capex=13_500.0,
    source="LIT41[S] tdp-conflict[U] LIT31[S] PLACEHOLDER:nic[U] PRICE-RULE[D] CAPEX-EST[U] "
    "IDLE[U]",
    aliases=("H20-96GB",),
)
_builtin(
    "H200",
    "NVIDIA",
    tflops=989.0,
    memory=141 * _GB,
    mem_bw=4.8 * _TB_S,
    tdp=700.0,
    up=900 * _GB_S / 2,
    out=400 * _GBIT_S,
    price=_H100_PRICE * 43.26 / 39.33,
    capex=32_500.0,
    source="LIT41[S] LIT31[S] LIT42:capacity-block-ratio[D] CAPEX-EST[U] IDLE[U]",
    aliases=("H200-SXM",),
)
_builtin(
    "B200",
    "NVIDIA",
    tflops=2250.0,
    memory=180 * _GB,
    mem_bw=8.0 * _TB_S,
    tdp=1000.0,
    up=1800 * _GB_S / 2,
    out=400 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 35_000.0,
    capex=35_000.0,
    source="LIT41[S] LIT31[U] PRICE-RULE[D] CAPEX-EST[U] IDLE[U]",
    aliases=("B200-SXM", "HGX-B200"),
)
_builtin(
    "GB200",
    "NVIDIA",
    tflops=2500.0,
    memory=186 * _GB,
    mem_bw=8.0 * _TB_S,
    tdp=1200.0,
    up=1800 * _GB_S / 2,
    out=400 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 2.5e6 / 72,
    capex=2.5e6 / 72,
    source="LIT41[S] LIT31[S/U] PRICE-RULE[D] LIT42:NVL72-rack/72[D] IDLE[U]",
    aliases=("GB200-NVL72",),
)
_builtin(
    "Ascend910B",
    "Huawei",
    tflops=320.0,
    memory=64 * _GB,
    mem_bw=1.6 * _TB_S,
    tdp=400.0,
    up=392 * _GB_S / 2,
    out=200 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 16_700.0,
    capex=16_700.0,
    source="PLACEHOLDER: LIT41 910B row is [U] (multiple weak sources) for tflops/bw/tdp/"
    "HCCS; PLACEHOLDER:nic[U] PRICE-RULE[D] CAPEX-EST[U] IDLE[U]",
    aliases=("910B", "Ascend-910B"),
)
_builtin(
    "Ascend910C",
    "Huawei",
    tflops=780.0,
    memory=128 * _GB,
    mem_bw=3.2 * _TB_S,
    tdp=800.0,
    up=392 * _GB_S,
    out=400 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 2 * 16_700.0,
    capex=2 * 16_700.0,
    source="LIT41[S] tdp=2x910B[U] LIT31:CM384-UB[S] LIT31:RDMA[U] PRICE-RULE[D] "
    "capex=2x910B[U] IDLE[U]",
    aliases=("910C", "Ascend-910C"),
)
_builtin(
    "KunlunP800",
    "Baidu",
    tflops=280.0,
    memory=96 * _GB,
    mem_bw=2.0 * _TB_S,
    tdp=400.0,
    up=400 * _GB_S / 2,
    out=200 * _GBIT_S,
    price=_PRICE_PER_CAPEX * 16_700.0,
    capex=16_700.0,
    source="PLACEHOLDER: specs not public; LIT41 notes-repo assumption for tflops/mem/bw [U]; "
    "tdp/links/capex placeholders [U]; PRICE-RULE[D] IDLE[U]",
    aliases=("P800", "Kunlun-P800", "KunlunXin-P800"),
)
_builtin(
    "Trainium1",
    "AWS",
    tflops=190.0,
    memory=32 * _GIB,
    mem_bw=820 * _GB_S,
    tdp=400.0,
    up=384 * _GB_S / 2,
    out=800 * _GBIT_S / 16,
    price=21.50 / 16,
    capex=21.50 / 16 / _PRICE_PER_CAPEX,
    source="AWS-NEURON[P] PLACEHOLDER:tdp[U] LIT42:trn1[S] capex=PRICE-RULE^-1[D] IDLE[U]",
    aliases=("Trainium", "trn1", "Trainium-1"),
)
_builtin(
    "Trainium2",
    "AWS",
    tflops=667.0,
    memory=96 * _GIB,
    mem_bw=2.9 * _TB_S,
    tdp=500.0,
    up=1280 * _GB_S / 2,
    out=3200 * _GBIT_S / 16,
    price=35.76 / 16,
    capex=35.76 / 16 / _PRICE_PER_CAPEX,
    source="AWS-NEURON[P] LIT41:tdp[U] TRN2-OD[U] capex=PRICE-RULE^-1[D] IDLE[U]",
    aliases=("trn2", "Trainium-2"),
)
