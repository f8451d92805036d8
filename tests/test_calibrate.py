"""moska-sim calibrate: op mapping, factor recovery on a synthetic trace, preset writing, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hw import specs
from hw.ops import DecodeAttention, Gemm, GroupedSharedAttention, LseMerge
from hw.specs import PRESET_DIR, chip_from_dict, load_chip
from sim.calibration.cli import calibrate
from sim.calibration.kernels import (
    ROUTER_LAUNCHES,
    ROUTER_LAUNCHES_CUB_SORT,
    Launch,
    chunk_histogram,
    record_models,
    unique_splits,
)
from sim.cli.calibrate import calibrate_main
from traces.io import write_trace
from traces.schema import StepRecord, Trace, TraceHeader, top_k_for

PLANTED = {"mma_efficiency": 0.55, "mem_efficiency": 0.7, "launch_overhead_ns": 5000.0}
BATCHES = (4, 24, 96, 512)  # launch-bound ... compute-bound shared attention


def _header(dtype: str = "bf16", **capture: object) -> TraceHeader:
    cap = {"backend": "triton", "shared_kernel": {"block_m": 64, "block_n": 64, "kv_splits": 2}}
    cap.update(capture)
    return TraceHeader(layers=3, q_heads=32, kv_heads=8, head_dim=128, dtype=dtype, shared_tokens=16 * 2048,
                       chunk_tokens=2048, n_chunks=16, keep_fraction=0.25, device="NVIDIA H100 80GB HBM3",
                       chip_hint="h100-sxm", created_at="2026-01-01T00:00:00Z", capture=cap)


def _records(h: TraceHeader, seed: int = 0) -> list[StepRecord]:
    rng = np.random.default_rng(seed)
    k = h.top_k
    out = []
    for step, batch in enumerate(BATCHES):
        for layer in range(h.layers):
            # popular chunks get most queries, so per-chunk batches range from 1 to ~batch
            weights = 1.0 / np.arange(1, h.n_chunks + 1) ** 1.2
            keys = np.log(weights) + rng.gumbel(size=(batch, h.kv_heads, h.n_chunks))  # weighted top-k draw
            sel = np.sort(np.argsort(-keys, axis=-1)[..., :k], axis=-1)
            out.append(StepRecord.from_selection(
                step, layer, np.arange(batch), rng.integers(256, 8192, batch), sel, h.n_chunks))
    return out


def _synthetic_trace(path: Path, chip_overrides: dict[str, float], noise: float = 0.02,
                     dtype: str = "bf16") -> Trace:
    """A trace whose kernel times are hw's own predictions on the planted chip, times lognormal noise."""
    h = _header(dtype)
    records = _records(h)
    chip = load_chip("h100-sxm", chip_overrides)
    launch = Launch.from_trace(Trace(h, records))
    rng = np.random.default_rng(1)
    for rec in records:
        models = record_models(h, rec, launch, chip)
        rec.kernel_ns = {kind: m.predict_ns(chip) * float(np.exp(rng.normal(0.0, noise)))
                         for kind, m in models.items()}
    trace = Trace(h, records)
    write_trace(path, trace)
    return trace


@pytest.fixture(scope="module")
def planted_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cal") / "planted.trace.npz"
    _synthetic_trace(path, PLANTED)
    return path


@pytest.fixture(scope="module")
def calibration(planted_trace: Path):
    return calibrate(planted_trace, "h100-sxm")


# ---------------------------------------------------------------------------------------------
# op mapping


def test_record_maps_to_the_reference_launches() -> None:
    h = _header()
    rec = _records(h)[0]
    launch = Launch.from_trace(Trace(h, [rec]))
    chip = load_chip("h100-sxm")
    models = record_models(h, rec, launch, chip)
    r = rec.batch_size

    (router,) = models["router"].ops
    assert router == Gemm(r * 4, 16 * 8, 128, "fp32")
    assert models["router"].glue == ROUTER_LAUNCHES - 1

    (shared,) = models["shared_attention"].ops
    assert isinstance(shared, GroupedSharedAttention)
    assert (shared.q_heads, shared.kv_heads, shared.requests) == (4, 1, r * 8)
    # one histogram "chunk" per (kv head, chunk) with a nonzero count, all queries accounted for
    assert shared.chunks == int(np.count_nonzero(rec.chunk_batch))
    assert shared.query_chunk_pairs == r * 8 * h.top_k
    assert (models["shared_attention"].tile_m, models["shared_attention"].block_n) == (64, 64)

    (unique,) = models["unique_attention"].ops
    assert unique == DecodeAttention(q_heads=32, kv_heads=8, head_dim=128, dtype="bf16", batch=r,
                                     kv_tokens=round(float(rec.unique_tokens.mean())))

    (merge,) = models["merge"].ops
    partials = h.top_k * 2 + unique_splits(int(rec.unique_tokens.max()), r * 8, chip.sm_count)
    assert models["merge"].serial_loads == partials
    assert isinstance(merge, LseMerge) and merge.partials == int(np.ceil(partials * 516 / 260))


def test_router_launches_follow_the_dispatch_sort() -> None:
    h = _header()
    small = StepRecord.from_selection(0, 0, np.arange(4), np.full(4, 100),
                                      np.tile(np.arange(h.top_k), (4, 8, 1)), h.n_chunks)
    big_r = 4096 // (8 * h.top_k) + 1
    big = StepRecord.from_selection(0, 0, np.arange(big_r), np.full(big_r, 100),
                                    np.tile(np.arange(h.top_k), (big_r, 8, 1)), h.n_chunks)
    chip = load_chip("h100-sxm")
    launch = Launch.from_trace(Trace(h, [small]))
    assert record_models(h, small, launch, chip)["router"].glue == ROUTER_LAUNCHES - 1
    assert record_models(h, big, launch, chip)["router"].glue == ROUTER_LAUNCHES_CUB_SORT - 1


def test_chunk_histogram_counts_groups_by_batch() -> None:
    cb = np.array([[0, 3, 1, 3], [1, 0, 0, 2]])
    assert chunk_histogram(cb) == ((1, 2), (2, 1), (3, 2))


def test_fp32_trace_prices_on_the_fma_peak(tmp_path: Path) -> None:
    h = _header("fp32")
    rec = _records(h)[0]
    chip = load_chip("h100-sxm")
    models = record_models(h, rec, Launch.from_trace(Trace(h, [rec])), chip)
    t32 = models["shared_attention"].predict_ns(chip)
    tbf = record_models(_header(), rec, Launch.from_trace(Trace(_header(), [rec])), chip)[
        "shared_attention"].predict_ns(chip)
    assert t32 > tbf > 0  # fp32 KV moves twice the bytes and its dots run on the FMA pipes


def test_merge_floor_is_one_latency_per_partial() -> None:
    h = _header()
    rec = _records(h)[0]  # batch 4: tiny merge, latency-bound
    chip = load_chip("h100-sxm")
    model = record_models(h, rec, Launch.from_trace(Trace(h, [rec])), chip)["merge"]
    slow = dataclasses.replace(chip, mem_latency_ns=2 * chip.mem_latency_ns)
    delta = model.predict_ns(slow) - model.predict_ns(chip)
    assert delta == pytest.approx(model.serial_loads * chip.mem_latency_ns)


# ---------------------------------------------------------------------------------------------
# fitting


def test_recovers_planted_factors(calibration) -> None:
    fitted = calibration.result.fitted
    for name, value in PLANTED.items():
        assert fitted[name] == pytest.approx(value, rel=0.04), name
    # the latency was not planted: the fit keeps it at the preset's value
    assert fitted["mem_latency_ns"] == pytest.approx(load_chip("h100-sxm").mem_latency_ns, rel=0.1)
    assert all(calibration.result.constrained[n] for n in PLANTED)


def test_errors_drop_to_the_noise(calibration) -> None:
    before, after = calibration.before["all"], calibration.after["all"]
    assert before.median > 0.15  # the preset is far from the planted chip
    assert after.median < 0.03 and after.p90 < 0.05  # 2% lognormal noise
    for kind in ("router", "shared_attention", "unique_attention", "merge"):
        assert calibration.after[kind].n == len(BATCHES) * 3
        assert calibration.after[kind].median < 0.03


def test_fit_is_deterministic(planted_trace: Path, calibration) -> None:
    again = calibrate(planted_trace, "h100-sxm")
    assert again.result.fitted == calibration.result.fitted


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_json_reports_before_and_after(planted_trace: Path, capsys: pytest.CaptureFixture) -> None:
    assert calibrate_main([str(planted_trace), "--chip", "h100-sxm", "--fit", "mem_efficiency", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["kinds"]) == {"router", "shared_attention", "unique_attention", "merge", "all"}
    assert out["kinds"]["all"]["before"]["n"] == 4 * len(BATCHES) * 3
    assert set(out["factors"]) == {"mem_efficiency"} and out["written"] is None


def test_cli_table(planted_trace: Path, capsys: pytest.CaptureFixture) -> None:
    assert calibrate_main([str(planted_trace), "--fit", "mem_efficiency,launch_overhead_ns"]) == 0
    out = capsys.readouterr().out
    assert "| shared_attention |" in out and "median before" in out and "| launch_overhead_ns |" in out


def test_fit_none_only_compares(planted_trace: Path, capsys: pytest.CaptureFixture) -> None:
    assert calibrate_main([str(planted_trace), "--fit", "none", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["factors"] == {} and out["kinds"]["all"]["after"] == out["kinds"]["all"]["before"]
    assert calibrate_main([str(planted_trace), "--fit", "none", "--write"]) == 2
    assert "--write" in capsys.readouterr().err


def test_several_traces_are_fitted_together(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, other = tmp_path / "first.trace.npz", tmp_path / "other.trace.npz"
    _synthetic_trace(first, {"mem_efficiency": 0.7})
    _synthetic_trace(other, {"mem_efficiency": 0.6})
    assert calibrate_main([str(first), str(other), "--fit", "mem_efficiency", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["path"] for t in out["traces"]] == [str(first), str(other)]
    assert out["kernels"] == 2 * 4 * len(BATCHES) * 3
    assert 0.6 < out["factors"]["mem_efficiency"]["fitted"] < 0.7


def test_write_creates_new_preset_and_keeps_the_original(planted_trace: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    original = (PRESET_DIR / "h100-sxm.yaml").read_bytes()
    out_dir = tmp_path / "presets"
    rc = calibrate_main([str(planted_trace), "--chip", "h100-sxm", "--write", "--preset-dir", str(out_dir)])
    assert rc == 0, capsys.readouterr().err
    path = out_dir / "h100-sxm-calibrated.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["kind"] == "chip" and data["name"] == "h100-sxm-calibrated"
    assert str(planted_trace) in data["source"] and "before" in data["source"] and "after" in data["source"]
    chip = chip_from_dict({k: v for k, v in data.items() if k != "kind"}, str(path))
    base = load_chip("h100-sxm")
    assert chip.mma_efficiency == pytest.approx(0.55, rel=0.04)
    assert chip.launch_overhead_ns == pytest.approx(5000, rel=0.04)
    # every other field is the base chip's
    assert dataclasses.replace(chip, name=base.name, source=base.source, mma_efficiency=base.mma_efficiency,
                               mem_efficiency=base.mem_efficiency, launch_overhead_ns=base.launch_overhead_ns,
                               mem_latency_ns=base.mem_latency_ns) == base
    assert (PRESET_DIR / "h100-sxm.yaml").read_bytes() == original
    monkeypatch.setattr(specs, "PRESET_DIR", out_dir)
    specs._chip_presets.cache_clear()
    try:
        assert load_chip("h100-sxm-calibrated") == chip
    finally:
        monkeypatch.undo()
        specs._chip_presets.cache_clear()


def test_write_refuses_to_overwrite_without_force(planted_trace: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    args = [str(planted_trace), "--fit", "mem_efficiency", "--write", "--name", "mine",
            "--preset-dir", str(tmp_path)]
    assert calibrate_main(args) == 0
    first = (tmp_path / "mine.yaml").read_bytes()
    capsys.readouterr()
    assert calibrate_main(args) == 2
    err = capsys.readouterr().err
    assert "mine.yaml" in err and "--force" in err and err.count("\n") == 1
    assert (tmp_path / "mine.yaml").read_bytes() == first
    assert calibrate_main([*args, "--force"]) == 0


def test_write_refuses_to_shadow_a_preset_name(planted_trace: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "other-file.yaml").write_text("kind: chip\nname: taken\n")
    rc = calibrate_main([str(planted_trace), "--fit", "mem_efficiency", "--write", "--name", "taken",
                         "--preset-dir", str(tmp_path)])
    assert rc == 2 and "other-file.yaml" in capsys.readouterr().err
    assert not (tmp_path / "taken.yaml").exists()


def test_cpu_trace_is_refused_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    h = _header()
    path = tmp_path / "cpu.trace.npz"
    write_trace(path, Trace(h, _records(h)[:2]))
    assert calibrate_main([str(path), "--chip", "h100-sxm"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "kernel_ns" in err and err.count("\n") == 1


def test_unknown_chip_and_corrupt_trace(planted_trace: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    assert calibrate_main([str(planted_trace), "--chip", "h100"]) == 2
    assert "unknown preset 'h100'" in capsys.readouterr().err
    bad = tmp_path / "bad.trace.npz"
    bad.write_bytes(planted_trace.read_bytes()[:500])
    assert calibrate_main([str(bad), "--chip", "h100-sxm"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1
    assert calibrate_main([str(planted_trace), "--fit", "clock_ghz"]) == 2
    assert "--fit" in capsys.readouterr().err


def test_torch_backend_trace_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    h = dataclasses.replace(_header(), capture={"backend": "torch"})
    recs = _records(h)[:1]
    recs[0].kernel_ns = {"router": 1000.0}
    path = tmp_path / "torch.trace.npz"
    write_trace(path, Trace(h, recs))
    assert calibrate_main([str(path)]) == 2
    assert "capture.backend" in capsys.readouterr().err


def test_top_k_matches_the_schema() -> None:
    assert _header().top_k == top_k_for(16, 0.25) == 4
