"""Calibration runs: fit kernel profiles and links on training shapes, report held-out error
(the logic of ``moska-sim calibrate``; its command line is ``sim.cli.calibrate``).

Inputs, any mix of:

* a probe file (``*.probe.json``, from ``moska-sim probe``);
* a folder of Vidur's H100 profiles (``hw/measurements/vidur-h100``: GEMMs and NCCL send/recv);
* moska GPU traces (``*.trace.npz``): the last one given is held out, the others train.

For each (kernel profile, chip) the fit uses the training shapes only; the tables show the error
on the held-out shapes, before (the uncalibrated model: the old presets' chip-wide numbers) and
after, per op kind (sim/calibration/datasets.py says which shapes are held out). A fit whose
held-out median error is worse than the uncalibrated model's for any op kind is refused: exit 2,
nothing written. ``--write`` stores the fitted entries, with their held-out figures, in the kernel
profiles (``hw/profiles/*.yaml``) and the link fits in ``hw/presets/links.yaml``.
User errors raise ``CalibrationError`` (or the reader's own error) naming the file or field.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from hw import profiles as hw_profiles
from hw.errors import HardwareError
from hw.profiles import DEFAULT_ENTRY, PROFILE_DIR, KernelProfile, profile_to_dict
from hw.specs import PRESET_DIR, load_chip
from sim.calibration.datasets import (
    VIDUR_MLP,
    DatasetError,
    LinkSample,
    Sample,
    probe_samples,
    send_recv_samples,
    vidur_gemm_samples,
)
from sim.calibration.errors import ErrorStats
from sim.calibration.kernels import trace_samples
from sim.calibration.profile_fit import (
    CalibrationReport,
    HeldOutWorse,
    LinkFit,
    calibrate_profiles,
    check_held_out,
    fit_link,
    shipped_links,
)
from traces.io import read_trace
from traces.probe_format import ProbeError
from traces.schema import TraceError


class CalibrationError(ValueError):
    """A user-facing problem with the inputs; the message names the file or field."""


@dataclasses.dataclass
class Inputs:
    """What the command read: kernel samples and link samples, and a line per input."""

    samples: list[Sample]
    links: list[LinkSample]
    described: list[str]


def read_inputs(paths: list[Path], chip: str | None = None) -> Inputs:
    """Read every input; traces: the last one is held out."""
    samples: list[Sample] = []
    links: list[LinkSample] = []
    described = []
    traces = [p for p in paths if p.name.endswith(".npz")]
    for path in paths:
        if path.is_dir():
            if not (path / VIDUR_MLP).exists():
                raise CalibrationError(f"{path}: a folder input must hold Vidur's {VIDUR_MLP} (and send_recv csv)")
            got = vidur_gemm_samples(path, chip or "h100-sxm")
            sr = send_recv_samples(path)
            samples += got
            links += sr
            described.append(f"{path}: Vidur H100 profiles, {len(got)} GEMMs, {len(sr)} send/recv")
        elif path.name.endswith(".json"):
            got = probe_samples(path, chip)
            samples += got
            described.append(f"{path}: probe, {len(got)} priced records on {got[0].chip if got else '?'}")
        elif path.name.endswith(".npz"):
            trace = read_trace(path)
            h = trace.header
            if h.capture.get("backend") not in (None, "triton"):
                raise CalibrationError(f"{path}: header field 'capture.backend' is {h.capture.get('backend')!r}: "
                                       f"only the Triton kernels' launches are modelled")
            if not any(r.kernel_ns for r in trace.records):
                raise CalibrationError(f"{path}: field 'kernel_ns': no measured kernel times (a CPU or --no-timing "
                                       f"capture); calibration needs a GPU trace")
            name = chip or h.chip_hint
            if not name:
                raise CalibrationError(f"{path}: header field 'chip_hint' is empty; pass --chip NAME")
            held = path == traces[-1]
            got = trace_samples(trace, str(path), name, load_chip(name).sm_count, held)
            samples += got
            described.append(f"{path}: trace on {h.device}, {len(got)} priced kernels, "
                             f"{'held out' if held else 'training'}")
        else:
            raise CalibrationError(f"{path}: expected a probe file (*.probe.json), a moska trace (*.trace.npz) "
                                   f"or a folder of Vidur profiles")
    return Inputs(samples, links, described)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _row(s: ErrorStats) -> str:
    return f"{_pct(s.median)} | {_pct(s.p90)}"


def render(inputs: Inputs, report: CalibrationReport | None, link_fits: list[LinkFit]) -> str:
    """The held-out tables (Markdown-compatible)."""
    lines = ["calibrate: " + "; ".join(inputs.described), ""]
    if report:
        lines += [("| chip | op kind | train | held out | median before | p90 before | median after | p90 after "
                   "| pred/meas after |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k in report.kinds:
            lines.append(f"| {k.chip} | {k.kind} | {k.train_n} | {k.after.n} | {_row(k.before)} | {_row(k.after)} "
                         f"| {k.after.median_ratio:.2f} |")
        lines += ["", ("| profile | chip | train | fixed_ns | mem_fraction | mma_fraction | cta_bandwidth_GBps "
                       "| overlap_p | serial_latency_ns | l2_writeback | kv_reuse | sustained_ratio |"), "|---|---|---:|" + "---:|" * 9]
        for f in report.fits:
            p = f.params
            lines.append(f"| {f.profile} | {f.chip} | {f.train_n} | {p.fixed_ns:.0f} | {p.mem_fraction:.3f} "
                         f"| {p.mma_fraction:.3f} | {p.cta_bandwidth_GBps:.4g} | {p.overlap_p:.3g} "
                         f"| {p.serial_latency_ns:.0f} | {p.l2_writeback:.3f} | {p.kv_reuse:.3g} "
                         f"| {p.sustained_ratio or '-'} |")
        if report.ratios:
            lines += ["", "sustained / burst compute ratio: "
                      + ", ".join(f"{c} {r:.3f}" for c, r in report.ratios.items())]
    if link_fits:
        lines += ["", ("| link | held-out sizes | median before | p90 before | median after | p90 after | fixed_ns "
                       "| bandwidth_GBps |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for lf in link_fits:
            lines.append(f"| {lf.link} | {lf.after.n} | {_row(lf.before)} | {_row(lf.after)} | {lf.fixed_ns:.0f} "
                         f"| {lf.bandwidth_GBps:.1f} |")
    return "\n".join(lines)


def _heldout_dict(report: CalibrationReport, profile: str, chip: str) -> dict[str, Any]:
    kinds = {s.kind for s in report.samples if s.profile == profile and s.chip == chip}
    out = {}
    for k in report.kinds:
        if k.chip == chip and k.kind in kinds and k.after.n:
            out[k.kind] = {"n": k.after.n, "median_before": round(k.before.median, 4),
                           "median": round(k.after.median, 4), "p90": round(k.after.p90, 4)}
    return out


def write_profiles(report: CalibrationReport, command: str, profile_dir: Path, default_from: str | None) -> list[Path]:
    """Write each fitted profile (its new entries with held-out figures) as hw/profiles/<name>.yaml."""
    written = []
    fitted_names = sorted({f.profile for f in report.fits})
    for name in fitted_names:
        prof: KernelProfile = report.profiles[name]
        for f in (f for f in report.fits if f.profile == name):
            entry = dataclasses.replace(f.params, heldout=_heldout_dict(report, name, f.chip),
                                        source=f"fitted by `{command}` on {f.train_n} training kernels")
            prof = prof.with_params(f.chip, entry)
        prof = dataclasses.replace(prof, source=f"entries fitted by `{command}` (each entry says on what)")
        if default_from and default_from in dict(prof.chips):
            src = dict(prof.chips)[default_from]
            prof = prof.with_params(DEFAULT_ENTRY, dataclasses.replace(
                src, heldout={}, source=f"assumed for chips never measured: a copy of the {default_from} entry"))
        body = profile_to_dict(prof)
        path = Path(profile_dir) / f"{name}.yaml"
        text = (f"# Kernel profile (hw/profiles.py). Entries written by `{command}`;\n"
                f"# re-run it rather than editing numbers by hand.\n")
        path.write_text(text + yaml.safe_dump(body, sort_keys=False, width=110))
        written.append(path)
    hw_profiles.clear_cache()
    return written


def write_links(link_fits: list[LinkFit], command: str, preset_dir: Path) -> Path:
    """Update the fitted links in hw/presets/links.yaml (other links and fields are kept)."""
    path = Path(preset_dir) / "links.yaml"
    data = yaml.safe_load(path.read_text())
    for lf in link_fits:
        body = data["links"][lf.link]
        body["fixed_ns"] = round(lf.fixed_ns, 1)
        body["bandwidth_GBps"] = round(lf.bandwidth_GBps, 2)
        body["fit"] = (f"{command}: held-out median {_pct(lf.after.median)}, p90 {_pct(lf.after.p90)} "
                       f"over {lf.after.n} message sizes")
    head = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
    path.write_text("\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False, width=140))
    from hw import specs

    specs._link_presets.cache_clear()
    return path


DOC = Path(__file__).resolve().parents[2] / "docs" / "fidelity.md"


class RefusedFit(CalibrationError):
    """A fit worse held out than the uncalibrated model; ``text`` is the table that shows it."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


@dataclasses.dataclass
class CalibrationRun:
    """What one calibration produced: the inputs, the per-kind report, the link fits, the
    rendered tables and the files written."""

    inputs: Inputs
    report: CalibrationReport | None
    link_fits: list[LinkFit]
    text: str
    written: list[Path]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inputs": self.inputs.described,
                               "written": [str(p) for p in self.written]}
        report = self.report
        if report:
            out["kinds"] = [{"chip": k.chip, "kind": k.kind, "train": k.train_n,
                             "before": k.before.to_dict(), "after": k.after.to_dict(),
                             "after_train": k.after_train.to_dict()} for k in report.kinds]
            out["fits"] = [{"profile": f.profile, "chip": f.chip, "train": f.train_n,
                            "params": {n: getattr(f.params, n) for n in hw_profiles.FITTABLE}}
                           for f in report.fits]
            out["ratios"] = report.ratios
        out["links"] = [{"link": lf.link, "fixed_ns": lf.fixed_ns,
                         "bandwidth_GBps": lf.bandwidth_GBps, "before": lf.before.to_dict(),
                         "after": lf.after.to_dict()} for lf in self.link_fits]
        return out


def run_calibration(paths: list[Path], chip: str | None = None, *, write: bool = False,
                    default_from: str | None = None, profile_dir: Path = PROFILE_DIR,
                    preset_dir: Path = PRESET_DIR, command: str = "") -> CalibrationRun:
    """Fit on the training shapes of ``paths``, check held out, and with ``write`` store the
    fitted profiles and links. A fit worse held out is refused (``RefusedFit``), nothing
    written."""
    if not paths:
        raise CalibrationError("INPUT: give at least one probe file, Vidur folder or trace "
                               "(or --fidelity)")
    inputs = read_inputs(list(paths), chip)
    report = None
    if inputs.samples:
        if not any(s.split == "train" for s in inputs.samples):
            raise CalibrationError(f"{paths[0]}: nothing to train on (one trace alone is held "
                                   "out); give a probe file, a Vidur folder, or two traces or more")
        report = calibrate_profiles(inputs.samples)
    link_fits = [fit_link(inputs.links, link) for link in shipped_links(inputs.links).values()]
    text = render(inputs, report, link_fits)
    if report:
        try:
            check_held_out(report)
        except HeldOutWorse as exc:
            raise RefusedFit(str(exc), text) from None
    worse_links = [lf for lf in link_fits if lf.after.median > lf.before.median]
    if worse_links:
        raise CalibrationError("refusing the fit: held-out median error of link "
                               f"{worse_links[0].link} is worse than its datasheet preset's")
    written: list[Path] = []
    if write:
        if report:
            written += write_profiles(report, command, profile_dir, default_from)
        if link_fits:
            written.append(write_links(link_fits, command, preset_dir))
    return CalibrationRun(inputs, report, link_fits, text, written)


def fidelity_table(doc: Path = DOC, write: bool = False) -> tuple[str, bool]:
    """docs/fidelity.md's generated table from the shipped files; with ``write`` stored in
    ``doc``. Returns (table, whether the file changed)."""
    from sim.calibration.fidelity import render as render_fidelity
    from sim.calibration.fidelity import update_doc

    block = render_fidelity()
    changed = update_doc(doc, block) if write else False
    return block, changed


USER_ERRORS = (TraceError, ProbeError, DatasetError, HardwareError, CalibrationError, OSError,
               ValueError)

__all__ = ["DOC", "USER_ERRORS", "CalibrationError", "CalibrationRun", "RefusedFit",
           "fidelity_table", "read_inputs", "render", "run_calibration"]
