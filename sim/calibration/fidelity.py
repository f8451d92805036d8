"""The fidelity tables of docs/fidelity.md, recomputed from the shipped files alone.

Inputs: the shipped probe files (traces/probes/*.probe.json), Vidur's H100 profiles
(hw/measurements/vidur-h100), the shipped H100 sample traces (traces/samples/h100-*.trace.npz),
and the shipped kernel profiles and presets. Nothing is fitted here: every figure is the error of
the model *as shipped* on measurements, held out from the fit where the fit saw that source
(datasets.SPLIT_RULES), and all of them for the H100 traces, which no fit ever used.
"before" is the uncalibrated model (profile_fit.UNCALIBRATED; datasheet links).

``render()`` gives the Markdown block; tests/test_fidelity.py checks docs/fidelity.md holds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.profiles import load_profile
from hw.specs import load_chip
from sim.calibration.datasets import (
    TEST,
    VIDUR_DIR,
    Sample,
    probe_samples,
    send_recv_samples,
    vidur_gemm_samples,
)
from sim.calibration.errors import ErrorStats, stats
from sim.calibration.kernels import trace_samples
from sim.calibration.profile_fit import (
    datasheet_link,
    link_predict,
    predict,
    shipped_links,
    uncalibrated,
)
from traces.io import read_trace

ROOT = Path(__file__).resolve().parents[2]
PROBES = sorted((ROOT / "traces" / "probes").glob("*.probe.json"), key=lambda p: ("validation" in p.name, p.name))
H100_TRACES = sorted((ROOT / "traces" / "samples").glob("h100-*.trace.npz"))
BEGIN, END = "<!-- fidelity:begin (generated: moska-sim calibrate --fidelity --write) -->", "<!-- fidelity:end -->"
GOAL = {"median": 0.10, "p90": 0.20}


@dataclass(frozen=True)
class Row:
    """One table row: a (chip, op kind) group's error before and after, and over which samples."""

    source: str
    chip: str
    kind: str
    over: str
    before: ErrorStats
    after: ErrorStats


def _ratios(chips: Sequence[str]) -> dict[str, float]:
    return {c: load_chip(c).sustained_compute_ratio for c in chips}


def kernel_rows(samples: Sequence[Sample], source: str, held_out_only: bool) -> list[Row]:
    """Per (chip, kind): the shipped model vs the uncalibrated one on the chosen samples."""
    use = [s for s in samples if s.split == TEST or not held_out_only]
    names = sorted({s.profile for s in use} | {"torch-copy"})
    shipped = {n: load_profile(n) for n in names}
    before = {n: uncalibrated(shipped[n]) for n in names}
    meas = np.array([s.measured_ns for s in use])
    pb = predict(use, before, {})
    pa = predict(use, shipped, _ratios(sorted({s.chip for s in use})))
    rows = []
    for key in dict.fromkeys((s.chip, s.kind) for s in use):
        idx = np.array([i for i, s in enumerate(use) if (s.chip, s.kind) == key])
        rows.append(Row(source, key[0], key[1], "held out" if held_out_only else "all",
                        stats(pb[idx], meas[idx]), stats(pa[idx], meas[idx])))
    return rows


def link_rows() -> list[Row]:
    """Held-out NCCL send/recv sizes: datasheet links vs the shipped (fitted) presets."""
    samples = send_recv_samples()
    rows = []
    for name, link in shipped_links(samples).items():
        te = [s for s in samples if s.link == name and s.split == TEST]
        b = np.array([s.nbytes for s in te])
        m = np.array([s.measured_ns for s in te])
        rows.append(Row("Vidur send/recv (H100 DGX)", "h100-sxm", f"send/recv {name}", "held out",
                        stats(link_predict(datasheet_link(link), b), m), stats(link_predict(link, b), m)))
    return rows


def all_rows() -> list[Row]:
    """Every table row docs/fidelity.md shows, in order."""
    rows: list[Row] = []
    for path in PROBES:
        samples = probe_samples(path)
        independent = all(sm.split == TEST for sm in samples)
        label = f"probe {path.name}" + (" (other shapes, never fitted)" if independent else "")
        rows += kernel_rows(samples, label, held_out_only=True)
    vidur = vidur_gemm_samples(VIDUR_DIR)
    rows += kernel_rows(vidur, "Vidur GEMMs (H100, fp16)", held_out_only=True)
    rows += kernel_rows(vidur, "Vidur GEMMs (H100, fp16)", held_out_only=False)
    rows += link_rows()
    traces: list[Sample] = []
    for path in H100_TRACES:
        trace = read_trace(path)
        chip = trace.header.chip_hint or "h100-sxm"
        traces += trace_samples(trace, str(path), chip, load_chip(chip).sm_count, held_out=True)
    if traces:
        rows += kernel_rows(traces, "H100 sample traces (never fitted)", held_out_only=True)
    return rows


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _goal(s: ErrorStats) -> str:
    return "yes" if s.median <= GOAL["median"] and s.p90 <= GOAL["p90"] else "**no**"


def render(rows: Sequence[Row] | None = None) -> str:
    """The generated Markdown block (between the BEGIN and END markers)."""
    rows = all_rows() if rows is None else rows
    lines = [BEGIN, "", ("| source | chip | op kind | over | n | median before | p90 before | median after "
                         "| p90 after | pred/meas after | <= 10% / 20% |"), "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.source} | {r.chip} | {r.kind} | {r.over} | {r.after.n} | {_pct(r.before.median)} "
                     f"| {_pct(r.before.p90)} | {_pct(r.after.median)} | {_pct(r.after.p90)} "
                     f"| {r.after.median_ratio:.2f} | {_goal(r.after)} |")
    lines += ["", END]
    return "\n".join(lines)


def update_doc(path: Path, block: str) -> bool:
    """Replace the generated block of ``path``; True when the text changed."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no generated block (the markers {BEGIN!r} .. {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + block + tail
    if new != text:
        path.write_text(new)
    return new != text


def doc_block(path: Path) -> str:
    """The generated block as it stands in ``path``."""
    text = path.read_text()
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END


__all__ = ["BEGIN", "END", "H100_TRACES", "PROBES", "Row", "all_rows", "doc_block", "kernel_rows", "link_rows",
           "render", "update_doc"]
