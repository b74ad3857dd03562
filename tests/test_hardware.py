"""Tests of the device catalogue (clustersim.hardware) and its docs table."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustersim import hardware
from clustersim.errors import ConfigError, UnknownNameError
from clustersim.hardware import (
    DEVICES,
    IDLE_FRACTION_OF_TDP,
    DeviceSpec,
    UndisclosedDeviceError,
    device_names,
    get_device,
    register_device,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hardware.md"

REQUIRED = [
    "V100", "V100-16GB", "A100", "H100", "H800", "H20", "H200", "B200", "GB200",
    "Ascend910B", "Ascend910C", "KunlunP800", "Trainium2", "Trainium1", "T4", "P100", "A10",
]  # fmt: skip


@pytest.fixture
def restore_catalogue() -> Iterator[None]:
    """Undo any registration a test makes (the catalogue is process-global)."""
    devices = dict(hardware._DEVICES)
    index = dict(hardware._INDEX)
    yield
    hardware._DEVICES.clear()
    hardware._DEVICES.update(devices)
    hardware._INDEX.clear()
    hardware._INDEX.update(index)


def _spec(name: str = "MyChip", **over: object) -> DeviceSpec:
    base: dict[str, object] = dict(
        name=name,
        vendor="Acme",
        bf16_tflops=500.0,
        memory_bytes=64 * 10**9,
        memory_bw=2.0e12,
        tdp_w=450.0,
        idle_w=54.0,
        scale_up_bw=200e9,
        scale_out_bw=50e9,
        price_per_hour=3.0,
        capex_usd=20_000.0,
        training=True,
        source="test",
    )
    base.update(over)
    return DeviceSpec(**base)  # type: ignore[arg-type]


def test_required_devices_present() -> None:
    assert set(REQUIRED) <= set(device_names())
    assert device_names() == sorted(DEVICES)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("H100", "H100"),
        ("h100", "H100"),
        ("h100-sxm", "H100"),
        ("H100_SXM5", "H100"),
        ("ascend910b", "Ascend910B"),
        ("Ascend 910B", "Ascend910B"),
        ("910B", "Ascend910B"),
        ("910c", "Ascend910C"),
        ("p800", "KunlunP800"),
        ("trn2", "Trainium2"),
        ("TRN1", "Trainium1"),
        ("Trainium", "Trainium1"),
        ("V100M16", "V100-16GB"),
        ("v100m32", "V100"),
        ("gb200-nvl72", "GB200"),
    ],
)
def test_lookup_alias_and_case(alias: str, canonical: str) -> None:
    assert get_device(alias) is DEVICES[canonical]
    assert get_device(alias).name == canonical


@given(data=st.data())
def test_any_case_and_separator_variant_resolves(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(hardware._INDEX)))
    chars = [c.upper() if data.draw(st.booleans()) else c for c in key]
    seps = data.draw(st.lists(st.sampled_from(["", "-", "_", " "]), min_size=len(chars)))
    variant = "".join(c + s for c, s in zip(chars, seps, strict=False))
    assert get_device(variant).name == hardware._INDEX[key]


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_device("H1000")
    msg = str(info.value)
    assert "unknown device 'H1000'" in msg
    assert "did you mean 'H100'?" in msg
    assert info.value.kind == "device"
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize("code", ["G1", "G2", "g3"])
def test_openb_undisclosed_codes_error_clearly(code: str) -> None:
    with pytest.raises(UndisclosedDeviceError) as info:
        get_device(code)
    msg = str(info.value)
    assert isinstance(info.value, UnknownNameError)
    assert "undisclosed" in msg and code in msg
    assert "did you mean" not in msg  # no misleading GB200/H20 suggestion
    assert code.upper() not in {n.upper() for n in DEVICES}


@pytest.mark.usefixtures("restore_catalogue")
def test_undisclosed_code_can_be_registered() -> None:
    spec = _spec("G2")
    register_device(spec)
    assert get_device("g2") is spec


@pytest.mark.usefixtures("restore_catalogue")
def test_register_round_trip() -> None:
    spec = _spec()
    register_device(spec, aliases=["mychip-64g", "MC64"])
    assert get_device("MyChip") is spec
    assert get_device("MYCHIP_64G") is spec
    assert get_device("mc64") is spec
    assert DEVICES["MyChip"] is spec  # live read-only view sees the new device
    assert "MyChip" in device_names()


@pytest.mark.usefixtures("restore_catalogue")
def test_register_duplicates_raise_and_change_nothing() -> None:
    before = dict(DEVICES)
    with pytest.raises(ConfigError, match="already registered"):
        register_device(_spec("H100"))
    with pytest.raises(ConfigError, match="already registered"):
        register_device(_spec("h100"))  # same after normalisation
    with pytest.raises(ConfigError, match="already belongs to device 'H100'"):
        register_device(_spec("NewChip"), aliases=["h100-sxm"])
    with pytest.raises(ConfigError, match="is the name of device 'A100'"):
        register_device(_spec("NewChip"), aliases=["A100"], replace=True)
    assert dict(DEVICES) == before
    with pytest.raises(UnknownNameError):
        get_device("NewChip")


@pytest.mark.usefixtures("restore_catalogue")
def test_register_replace_keeps_old_aliases() -> None:
    faster = dataclasses.replace(DEVICES["H100"], bf16_tflops=1000.0, source="test")
    register_device(faster, replace=True)
    assert get_device("h100-sxm") is faster
    assert DEVICES["H100"].bf16_tflops == 1000.0
    # re-pointing another device's alias needs replace=True
    mine = _spec()
    register_device(mine, aliases=["trn2"], replace=True)
    assert get_device("trn2") is mine
    assert get_device("Trainium2").name == "Trainium2"


def test_devices_mapping_is_read_only() -> None:
    with pytest.raises(TypeError):
        DEVICES["X"] = DEVICES["H100"]  # type: ignore[index]


def test_units_are_what_the_vendor_means() -> None:
    h100 = get_device("H100")
    assert h100.memory_bytes == 80 * 10**9  # NVIDIA "80 GB" = 80e9 bytes
    assert get_device("Trainium2").memory_bytes == 96 * 2**30  # AWS "96 GiB"
    assert h100.memory_bw == 3.35e12
    assert h100.scale_up_bw == 450e9  # NVLink4 900 GB/s bidirectional -> per direction
    assert h100.scale_out_bw == 50e9  # 400 Gb/s NIC
    assert get_device("A100").scale_out_bw == 25e9  # 200 Gb/s HDR
    assert get_device("Trainium2").scale_out_bw == 25e9  # 3.2 Tb/s EFA / 16 chips
    assert get_device("T4").scale_up_bw == pytest.approx(15.75e9, rel=1e-3)  # PCIe 3 x16


def test_flops_property() -> None:
    assert get_device("H100").flops == 989e12
    assert get_device("A100").flops == 312e12
    assert _spec(bf16_tflops=2.5).flops == 2.5e12


def test_prices_follow_documented_rules() -> None:
    h100 = get_device("H100")
    assert h100.price_per_hour == pytest.approx(12.29)  # p5.48xlarge $98.32 / 8
    assert get_device("A100").price_per_hour == pytest.approx(32.77 / 8)
    assert get_device("Trainium1").price_per_hour == pytest.approx(21.50 / 16)
    assert get_device("H200").price_per_hour == pytest.approx(12.29 * 43.26 / 39.33)
    ratio = h100.price_per_hour / h100.capex_usd
    for name in ("H800", "H20", "B200", "GB200", "Ascend910B", "Ascend910C", "KunlunP800"):
        d = get_device(name)
        assert d.price_per_hour / d.capex_usd == pytest.approx(ratio), name
    assert get_device("GB200").capex_usd == pytest.approx(2.5e6 / 72)


@pytest.mark.parametrize("name", sorted(hardware._DEVICES))
def test_every_builtin_is_sane(name: str) -> None:
    d = DEVICES[name]
    for f in ("bf16_tflops", "memory_bytes", "memory_bw", "tdp_w", "idle_w", "scale_up_bw",
              "scale_out_bw", "price_per_hour", "capex_usd"):  # fmt: skip
        value = getattr(d, f)
        assert value > 0 and math.isfinite(value), f
    assert isinstance(d.memory_bytes, int)
    assert d.source.strip() and d.vendor.strip()
    assert d.idle_w == pytest.approx(IDLE_FRACTION_OF_TDP * d.tdp_w)
    assert d.training is True
    # memory bandwidth between 100 GB/s and 20 TB/s, compute between 10 and 5000 TFLOPS
    assert 1e11 < d.memory_bw < 2e13 and 10 < d.bf16_tflops < 5000


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"bf16_tflops": 0.0}, "bf16_tflops"),
        ({"memory_bytes": 64e9}, "memory_bytes"),
        ({"scale_out_bw": -1.0}, "scale_out_bw"),
        ({"price_per_hour": float("nan")}, "price_per_hour"),
        ({"idle_w": 500.0}, "idle_w"),
        ({"training": "yes"}, "training"),
        ({"source": " "}, "source"),
        ({"tdp_w": True}, "tdp_w"),
    ],
)
def test_spec_validation_names_the_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        _spec("MyChip", **over)
    assert "MyChip" in str(info.value)


def test_spec_rejects_whitespace_name_and_accepts_zero_price() -> None:
    with pytest.raises(ConfigError):
        _spec("My Chip")
    assert _spec(price_per_hour=0.0, capex_usd=0.0, idle_w=0.0).price_per_hour == 0.0


def _first_number(cell: str) -> float:
    m = re.match(r"\s*\$?([0-9][0-9,]*\.?[0-9]*)", cell)
    assert m, cell
    return float(m.group(1).replace(",", ""))


def test_docs_table_matches_catalogue() -> None:
    rows = [
        line for line in DOCS.read_text(encoding="utf-8").splitlines() if line.startswith("| **")
    ]
    seen = set()
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.match(r"\*\*(.+?)\*\*", cells[0])
        assert name, line
        d = DEVICES[name.group(1)]
        seen.add(d.name)
        assert cells[1] == d.vendor
        unit = 2**30 if "GiB" in cells[3] else 10**9
        expected = [
            (cells[2], d.bf16_tflops, 1.0),
            (cells[3], d.memory_bytes, unit),
            (cells[4], d.memory_bw, 1e12),
            (cells[5], d.tdp_w, 1.0),
            (cells[6], d.idle_w, 1.0),
            (cells[7], d.scale_up_bw, 1e9),
            (cells[8], d.scale_out_bw, 1e9 / 8),
            (cells[9], d.price_per_hour, 1.0),
            (cells[10], d.capex_usd, 1.0),
        ]
        for cell, value, scale in expected:
            assert _first_number(cell) * scale == pytest.approx(value, rel=2e-3), (d.name, cell)
            assert re.search(r"\[[PSDU]\]", cell), (d.name, cell)  # every value has a grade
        assert cells[11] == ("yes" if d.training else "no")
    assert seen == set(hardware._DEVICES)
