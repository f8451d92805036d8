"""`moska-sim calibrate TRACE... --chip NAME`: hw's predicted kernel times vs a GPU trace, before and after fitting.

Prints median and p90 relative error per kernel kind before and after fitting a few ChipSpec
factors; ``--write`` stores the fitted chip as a new preset. User errors (bad trace, unknown chip,
a trace without kernel times, an existing preset) print one line and return 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hw.errors import HardwareError
from hw.specs import PRESET_DIR, ChipSpec, load_chip
from sim.calibration.errors import ALL, ErrorStats, stats_by_kind
from sim.calibration.fit import DEFAULT_FACTORS, FACTORS, OBJECTIVES, FitResult, fit
from sim.calibration.kernels import MeasuredKernel, measured_kernels, predict_all
from sim.calibration.preset import write_preset
from traces.io import read_trace
from traces.schema import Trace, TraceError


class CalibrationError(ValueError):
    """A user-facing problem with the inputs; the message names the file or field."""


@dataclass(frozen=True)
class TraceInput:
    """One trace read for calibration, under the path it was given as."""

    path: str
    trace: Trace

    def describe(self) -> str:
        h = self.trace.header
        return f"{self.path} ({h.device}, {h.dtype}, {self.trace.n_records} records)"


@dataclass(frozen=True)
class Calibration:
    """Everything one calibration produced (what the table and the JSON show)."""

    traces: list[TraceInput]
    base: ChipSpec
    kernels: list[MeasuredKernel]
    fit_count: int
    result: FitResult
    before: dict[str, ErrorStats]
    after: dict[str, ErrorStats]
    warnings: list[str]
    objective: str = "mean"

    def to_dict(self) -> dict[str, Any]:
        return {
            "traces": [{"path": t.path, "device": t.trace.header.device, "dtype": t.trace.header.dtype,
                        "records": t.trace.n_records} for t in self.traces],
            "chip": self.base.name,
            "kernels": len(self.kernels),
            "fitted_on": self.fit_count,
            "kinds": {k: {"before": self.before[k].to_dict(), "after": self.after[k].to_dict()}
                      for k in self.before},
            "factors": {name: {"preset": self.result.base[name], "fitted": self.result.fitted[name],
                               "constrained": self.result.constrained[name]} for name in self.result.fitted},
            "objective": {"kind": self.objective, "before": self.result.objective_before,
                          "after": self.result.objective_after, "evaluations": self.result.evaluations},
            "warnings": list(self.warnings),
        }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moska-sim calibrate",
        description="Compare hw's predicted time of every measured kernel of a GPU trace with the "
                    "measurement, fit chip factors, and optionally write them as a new preset. "
                    "Method: docs/calibration.md.",
    )
    p.add_argument("traces", type=Path, nargs="+", metavar="TRACE",
                   help="moska-trace file(s) with kernel times (captured on a GPU); several are fitted together")
    p.add_argument("--chip", help="base chip preset (default: the first trace header's chip_hint)")
    p.add_argument("--fit", default=",".join(DEFAULT_FACTORS),
                   help=f"comma-separated factors to fit, from {', '.join(FACTORS)} "
                        f"(default {','.join(DEFAULT_FACTORS)}); 'none' only compares the chip as it is")
    p.add_argument("--objective", choices=OBJECTIVES, default="mean",
                   help="per-kind reduction of |log(pred/meas)| that the fit minimises (default mean)")
    p.add_argument("--max-fit", type=int, default=256,
                   help="fit on at most this many kernels per kind and trace, evenly spaced through it; "
                        "errors are always reported on all of them (default 256)")
    p.add_argument("--write", action="store_true", help="write the fitted chip as a new preset")
    p.add_argument("--name", help="name of the new preset (default <chip>-calibrated)")
    p.add_argument("--preset-dir", type=Path, default=PRESET_DIR,
                   help="folder to write the preset into (default the package's hw/presets)")
    p.add_argument("--force", action="store_true", help="overwrite an existing preset of that name")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    return p


def _fit_subset(kernels: list[MeasuredKernel], per_kind: int) -> list[MeasuredKernel]:
    """At most ``per_kind`` kernels of each kind of each trace, evenly spaced (deterministic)."""
    out: list[MeasuredKernel] = []
    for key in dict.fromkeys((k.source, k.kind) for k in kernels):
        group = [k for k in kernels if (k.source, k.kind) == key]
        if len(group) > per_kind:
            idx = np.unique(np.linspace(0, len(group) - 1, per_kind).round().astype(int))
            group = [group[i] for i in idx]
        out.extend(group)
    return out


def _trace_warnings(trace: Trace, path: str, chip: ChipSpec) -> list[str]:
    h = trace.header
    warnings = []
    timed = h.capture.get("timed_layers")
    gap_free = h.capture.get("timed_layers_gap_free")
    if isinstance(timed, int) and isinstance(gap_free, int) and gap_free < timed:
        warnings.append(f"{path}: capture.timed_layers_gap_free: {timed - gap_free} of {timed} timed layers "
                        f"caught the GPU idle before all launches were queued; their times include host "
                        f"launch gaps (recapture with a larger --sleep-cycles)")
    if h.chip_hint and not chip.name.startswith(h.chip_hint):  # h100-sxm-calibrated fits h100-sxm
        warnings.append(f"{path}: header chip_hint is {h.chip_hint!r} but calibrating chip {chip.name!r}")
    return warnings


def _read(path: Path) -> TraceInput:
    """Read one trace and check it can be calibrated against (Triton backend, kernel times)."""
    src = str(path)
    trace = read_trace(path)
    h = trace.header
    backend = h.capture.get("backend")
    if backend not in (None, "triton"):
        raise CalibrationError(
            f"{src}: header field 'capture.backend' is {backend!r}: only the Triton kernels' launches are "
            f"modelled (the torch backend loops over chunks in Python); recapture with --backend triton")
    if not any(r.kernel_ns for r in trace.records):
        raise CalibrationError(
            f"{src}: field 'kernel_ns': no measured kernel times in any of its {trace.n_records} records "
            f"(captured on {h.device!r}; a CPU or --no-timing capture); calibration needs a GPU trace")
    return TraceInput(src, trace)


def calibrate(trace_paths: Path | Sequence[Path], chip_name: str | None,
              factors: tuple[str, ...] = DEFAULT_FACTORS, objective: str = "mean",
              max_fit: int = 256) -> Calibration:
    """Read the trace(s), price every measured kernel on the base chip, fit, and price again."""
    paths = [trace_paths] if isinstance(trace_paths, (str, Path)) else list(trace_paths)
    if max_fit < 1:
        raise CalibrationError(f"--max-fit: expected a whole number >= 1, got {max_fit}")
    inputs = [_read(Path(p)) for p in paths]
    name = chip_name or inputs[0].trace.header.chip_hint
    if not name:
        raise CalibrationError(f"{inputs[0].path}: header field 'chip_hint' is empty; pass --chip NAME")
    base = load_chip(name)
    kernels = [k for t in inputs for k in measured_kernels(t.trace, base, source=t.path)]
    subset = _fit_subset(kernels, max_fit)
    result = fit(subset, base, factors, objective)
    meas = np.array([k.measured_ns for k in kernels])
    kinds = [k.kind for k in kernels]
    return Calibration(
        traces=inputs, base=base, kernels=kernels, fit_count=len(subset), result=result,
        before=stats_by_kind(kinds, predict_all(kernels, base), meas),
        after=stats_by_kind(kinds, predict_all(kernels, result.chip), meas),
        warnings=[w for t in inputs for w in _trace_warnings(t.trace, t.path, base)],
        objective=objective,
    )


def _pct(x: float) -> str:
    return "-" if np.isnan(x) else f"{100 * x:.1f}%"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def render(cal: Calibration) -> str:
    """The before/after error table and the factor table, as plain text (Markdown-compatible)."""
    r = cal.result
    title = (f"calibrate {'; '.join(t.describe() for t in cal.traces)} on chip {cal.base.name}: "
             f"{len(cal.kernels)} measured kernels, fitted on {cal.fit_count}")
    columns = ("kernel", "n", "median before", "p90 before", "pred/meas before", "median after", "p90 after",
               "pred/meas after")
    lines = [title, "", "| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for kind in cal.before:
        b, a = cal.before[kind], cal.after[kind]
        label = f"**{kind}**" if kind == ALL else kind
        lines.append(f"| {label} | {b.n} | {_pct(b.median)} | {_pct(b.p90)} | {b.median_ratio:.2f} "
                     f"| {_pct(a.median)} | {_pct(a.p90)} | {a.median_ratio:.2f} |")
    if not r.fitted:
        return "\n".join([*lines, "", "no factors fitted (--fit none): 'after' is the chip as it is"])
    lines += [
        "",
        "| factor | preset | fitted | constrained by the trace(s) |",
        "|---|---:|---:|---|",
    ]
    for name in r.fitted:
        lines.append(f"| {name} | {_fmt(r.base[name])} | {_fmt(r.fitted[name])} "
                     f"| {'yes' if r.constrained[name] else 'no (kept near the preset)'} |")
    summary = (f"objective (mean over kinds and traces of the {cal.objective} |log(pred/meas)|): "
               f"{r.objective_before:.4f} -> {r.objective_after:.4f} in {r.evaluations} evaluations")
    lines += ["", summary]
    return "\n".join(lines)


def source_line(cal: Calibration, factors: tuple[str, ...]) -> str:
    """The ``source:`` text of a written preset: traces, base preset, errors before and after."""
    b, a = cal.before[ALL], cal.after[ALL]
    traces = "; ".join(f"{t.path} ({t.trace.header.device}, {t.trace.header.dtype}, created "
                       f"{t.trace.header.created_at or 'unknown'})" for t in cal.traces)
    return (f"moska-sim calibrate: fitted {', '.join(factors)} of preset {cal.base.name} to {traces}, "
            f"{len(cal.kernels)} kernels; relative error median/p90 before {_pct(b.median)}/{_pct(b.p90)}, "
            f"after {_pct(a.median)}/{_pct(a.p90)}. Base preset source: {cal.base.source}")


def calibrate_main(argv: list[str]) -> int:
    """Entry point of ``moska-sim calibrate``: 0 on success, 2 on a user error (one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    factors = tuple(f.strip() for f in args.fit.split(",") if f.strip() and f.strip() != "none")
    try:
        unknown = [f for f in factors if f not in FACTORS]
        if unknown or not (factors or args.fit.strip() == "none"):
            raise CalibrationError(f"--fit: unknown factor {unknown[0] if unknown else args.fit!r}; "
                                   f"choose from {', '.join(FACTORS)}, or 'none'")
        if args.write and not factors:
            raise CalibrationError("--write: nothing fitted (--fit none); there is no new preset to write")
        cal = calibrate(args.traces, args.chip, factors, args.objective, args.max_fit)
        written = None
        if args.write:
            name = args.name or f"{cal.base.name}-calibrated"
            command = "moska-sim calibrate " + " ".join(shlex.quote(a) for a in argv)
            written = write_preset(
                cal.result.chip, name, source_line(cal, factors), args.preset_dir, force=args.force,
                header=f"Generated by `{command}`; re-run it rather than editing by hand.\n"
                       f"Base preset: {cal.base.name} (its file is unchanged).")
    except (TraceError, HardwareError, CalibrationError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in cal.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        out = cal.to_dict()
        out["written"] = str(written) if written else None
        print(json.dumps(out, indent=1, sort_keys=True))
    else:
        print(render(cal))
        if written:
            print(f"\nwrote {written} (chip preset {written.stem!r})")
    return 0
