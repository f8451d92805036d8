"""Presets load, and bad presets or op arguments fail with one line naming the field."""

import pytest

from hw import DecodeAttention, Gemm, HardwareError, LseMerge, SharedAttention, load_chip, load_link
from hw.specs import available_chips, chip_from_dict, dtype_bytes

REQUIRED = {"h100-sxm", "h200", "b200", "moska-unique", "moska-shared"}


def test_presets_present_and_sourced():
    assert REQUIRED <= set(available_chips())
    for name in available_chips():
        chip = load_chip(name)
        assert chip.source, f"{name} must say where its numbers come from"
        assert chip.peak_flops("fp8") == pytest.approx(2 * chip.peak_flops("bf16"), rel=1e-3)


def test_h100_numbers():
    c = load_chip("h100-sxm")
    assert c.sm_count == 132 and c.hbm_bandwidth_GBps == 3350
    assert c.flops_per_cycle_per_sm("bf16") == pytest.approx(4096, rel=1e-3)
    assert c.ridge_point("fp8") == pytest.approx(1978.9e12 / 3350e9)


def test_unique_node_is_hbm_rich_and_shared_node_compute_rich():
    u, s = load_chip("moska-unique"), load_chip("moska-shared")
    assert u.hbm_capacity_GiB > load_chip("h100-sxm").hbm_capacity_GiB
    assert s.ridge_point("fp8") > u.ridge_point("fp8")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_chip_suggests():
    with pytest.raises(HardwareError) as e:
        load_chip("h100")
    assert "h100-sxm" in _one_line(e)


def test_bad_preset_field_named():
    base = {"name": "x", "clock_ghz": 1.0, "sm_count": 10, "peak_tflops": {"bf16": 1},
            "hbm_bandwidth_GBps": 1, "hbm_capacity_GiB": 1, "smem_per_sm_KiB": 1, "l2_MiB": 1}
    chip_from_dict(base)
    for bad, field in [({"sm_count": -3}, "sm_count"), ({"clock_ghz": "fast"}, "clock_ghz"),
                       ({"mem_efficiency": 1.5}, "mem_efficiency"),
                       ({"hbm_bandwith_GBps": 5}, "hbm_bandwidth_GBps"),
                       ({"peak_tflops": {"int3": 5}}, "peak_tflops")]:
        with pytest.raises(HardwareError) as e:
            chip_from_dict({**base, **bad}, "test.yaml")
        assert field in _one_line(e) and "test.yaml" in str(e.value)


def test_missing_field_named():
    with pytest.raises(HardwareError, match="missing required field 'sm_count'"):
        chip_from_dict({"name": "x", "clock_ghz": 1.0})


def test_override_validated():
    assert load_chip("h100-sxm", {"mem_efficiency": 0.5}).mem_efficiency == 0.5
    with pytest.raises(HardwareError, match="mem_efficiency"):
        load_chip("h100-sxm", {"mem_efficiency": 0})


@pytest.mark.parametrize("make,field", [
    (lambda: Gemm(0, 1, 1), "m"),
    (lambda: Gemm(1, 1, 1, "int4"), "dtype"),
    (lambda: DecodeAttention(q_heads=30, kv_heads=8, head_dim=128, dtype="bf16"), "q_heads"),
    (lambda: SharedAttention(q_heads=32, kv_heads=8, head_dim=128, dtype="bf16", batch=-1), "batch"),
    (lambda: LseMerge(1, 32, 128, 0), "partials"),
])
def test_bad_op_arguments_name_field(make, field):
    with pytest.raises(HardwareError) as e:
        make()
    assert field in _one_line(e)


def test_links_and_dtypes():
    ib = load_link("ib-ndr")
    assert ib.spec_bandwidth_GBps == 50  # ConnectX-7 NDR 400 Gb/s
    assert 30 < ib.bandwidth_GBps < 50 and ib.fixed_ns > 0  # what NCCL reaches (fitted to Vidur's send/recv)
    assert "held-out" in ib.fit
    assert dtype_bytes("fp8") == 1 and dtype_bytes("bf16") == 2
