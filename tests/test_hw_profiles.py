"""Kernel profiles and chip clocks: loading, validation errors that name the file and field, fallbacks."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from hw import Gemm, SharedAttention, kernel_cost, load_chip
from hw.errors import HardwareError
from hw.profiles import (
    DEFAULT_ENTRY,
    available_profiles,
    default_profile_name,
    load_profile,
    profile_from_dict,
    profile_to_dict,
)
from hw.specs import available_chips, chip_from_dict


def test_every_shipped_profile_has_a_fitted_h200_entry_with_held_out_figures_and_a_default():
    assert set(available_profiles()) >= {"cublas", "cublas-fp8", "triton-moska-decode", "sdpa-decode",
                                         "triton-moska-shared", "sdpa-shared", "triton-moska-merge", "torch-copy"}
    for name in available_profiles():
        prof = load_profile(name)
        table = dict(prof.chips)
        assert DEFAULT_ENTRY in table and "h200" in table, name
        assert table["h200"].heldout, f"{name}: the h200 entry records its held-out error"
        for kind, fig in table["h200"].heldout.items():
            assert fig["median"] <= fig["median_before"], (name, kind)  # calibrate refuses anything else


def test_unmeasured_chip_falls_back_to_the_default_entry():
    prof = load_profile("triton-moska-shared")
    assert prof.params("b200") == dict(prof.chips)[DEFAULT_ENTRY]
    assert prof.params("h200") == dict(prof.chips)["h200"]


def test_round_trip_and_defaults():
    prof = load_profile("cublas")
    again = profile_from_dict(profile_to_dict(prof), "<round trip>")
    assert again.chips == prof.chips and again.tile_m == prof.tile_m
    assert default_profile_name("gemm", "fp8") == "cublas-fp8"
    assert default_profile_name("gemm", "bf16") == "cublas"
    assert default_profile_name("shared_attention") == "triton-moska-shared"


def _profile_dict(**over):
    body = profile_to_dict(load_profile("torch-copy"))
    body.update(over)
    return body


@pytest.mark.parametrize("over,field", [
    ({"family": "conv"}, "family"),
    ({"split": "sometimes"}, "split"),
    ({"tile_m": [0]}, "tile_m"),
    ({"kind": "chip"}, "kind"),
    ({"splits": "none"}, "splits"),
    ({"chips": {"h200": {"mem_fraction": 1.5}}}, "chips.h200.mem_fraction"),
    ({"chips": {"h200": {"fixed_nss": 1.0}}}, "fixed_nss"),
    ({"chips": {}}, "chips"),
])
def test_bad_profile_fields_are_named(over, field):
    with pytest.raises(HardwareError) as e:
        profile_from_dict(_profile_dict(**over), "hw/profiles/x.yaml")
    assert field in str(e.value) and "hw/profiles/x.yaml" in str(e.value)


def test_unknown_profile_suggests_and_wrong_family_is_refused():
    with pytest.raises(HardwareError, match="did you mean 'cublas'"):
        load_profile("cublass")
    with pytest.raises(HardwareError, match="prices gemm kernels"):
        kernel_cost(SharedAttention(32, 8, 128, "bf16", batch=1, kv_tokens=4096), load_chip("h200"), "cublas")


def test_profile_yaml_files_parse_as_written(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(profile_to_dict(load_profile("sdpa-shared"))))
    assert profile_from_dict(yaml.safe_load(path.read_text()), str(path)).name == "sdpa-shared"


def test_presets_default_to_the_sustained_clock_and_validate_clock():
    for name in available_chips():
        chip = load_chip(name)
        assert chip.clock == "sustained" and 0 < chip.sustained_compute_ratio < 1, name
    body = dataclasses.asdict(load_chip("h200"))
    body["clock"] = "turbo"
    with pytest.raises(HardwareError, match="clock: expected one of burst, sustained"):
        chip_from_dict(body, "hw/presets/h200.yaml")
    assert load_chip("h200", {"clock": "burst"}).clock == "burst"


def test_chip_presets_carry_no_kernel_efficiencies():
    """Efficiencies belong to kernel profiles: the preset files do not set the legacy chip-wide ones."""
    from hw.specs import PRESET_DIR

    for path in PRESET_DIR.glob("*.yaml"):
        text = path.read_text()
        for legacy in ("mma_efficiency", "mem_efficiency", "launch_overhead_ns", "mem_latency_ns"):
            assert f"\n{legacy}:" not in text, f"{path}: {legacy}"


def test_cost_detail_names_profile_and_clock():
    cost = kernel_cost(Gemm(1, 4096, 4096), load_chip("h200"))
    assert cost.detail["profile"] == "cublas" and cost.detail["clock"] == "sustained"
    assert cost.detail["fixed_ns"] > 0
