"""``moska-sim sweep``: one experiment over a grid of parameter values, as one comparison.

``--param workload.shared.tokens=1Mi,4Mi,16Mi --param batching.window_us=0,100`` makes
the 3 x 2 configs of the cartesian product (first parameter slowest), labels each by its
values (``tokens=1Mi,window_us=0``; ``{zipf: 1.1}`` becomes ``zipf-1.1``) and runs them through ``run_compare``: the same report
as ``moska-sim compare``, with a table of the swept values beside each row.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.compare.cli import print_result
from sim.compare.runner import run_compare
from sim.compare.sweep import SweepSettings
from sim.compare.variants import CompareInputs, Variant
from sim.config import ConfigError, Issue, load_config, parse_assignment

LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
MAX_POINTS = 256  # a grid larger than this is almost surely a typo


@dataclass(frozen=True)
class GridParam:
    """One swept field: its dotted path, the values as typed, and as parsed (YAML)."""

    key: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]


def split_values(raw: str) -> list[str]:
    """``'1Mi,4Mi,{zipf: 1.1}'`` -> ``['1Mi', '4Mi', '{zipf: 1.1}']``: commas inside
    braces or brackets do not split."""
    out, depth, cur = [], 0, []
    for ch in raw:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_param(text: str) -> GridParam:
    """``KEY=V1,V2,...`` -> ``GridParam``; a clear error naming the option otherwise."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ConfigError([Issue("--param", (), f"expected KEY=V1,V2,..., got {text!r}")])
    texts = split_values(raw)
    if any(not t for t in texts):
        raise ConfigError([Issue("--param", (), f"{key}: an empty value in {raw!r}")])
    if len(set(texts)) != len(texts):
        raise ConfigError([Issue("--param", (), f"{key}: a value repeats in {raw!r}")])
    values = tuple(parse_assignment(f"{key}={t}")[1] for t in texts)
    return GridParam(key, tuple(texts), values)


def grid_label(params: list[GridParam], texts: tuple[str, ...]) -> str:
    """``tokens=1Mi,window_us=0``: each swept field's last path component and its value."""
    def short(t: str) -> str:  # '{zipf: 1.1}' -> 'zipf-1.1'
        return re.sub(r"[{}\[\]\s]", "", t).replace(":", "-")

    parts = [f"{p.key.rsplit('.', 1)[-1]}={short(t)}" for p, t in zip(params, texts)]
    return LABEL_UNSAFE.sub("_", ",".join(parts))


def grid_inputs(config: str | Path, params: list[GridParam],
                extra: dict[str, Any] | None = None, name: str | None = None) -> CompareInputs:
    """The compare inputs of the grid: one variant per point, every config validated
    before anything runs (all errors reported together, each naming its point)."""
    if not params:
        raise ConfigError([Issue("--param", (), "give at least one --param KEY=V1,V2,...")])
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        raise ConfigError([Issue("--param", (), "a field is swept twice")])
    points = 1
    for p in params:
        points *= len(p.values)
    if points > MAX_POINTS:
        raise ConfigError([Issue("--param", (), f"{points} grid points; at most {MAX_POINTS}")])
    variants, issues = [], []
    for combo in itertools.product(*(range(len(p.values)) for p in params)):
        texts = tuple(p.texts[i] for p, i in zip(params, combo))
        overrides = dict(extra or {})
        overrides.update({p.key: p.values[i] for p, i in zip(params, combo)})
        label = grid_label(params, texts)
        try:
            cfg = load_config(config, overrides)
        except ConfigError as exc:
            issues.extend(Issue(i.source, i.path, f"{i.message} [sweep point {label}]",
                                i.line, i.column) for i in exc.issues)
            continue
        variants.append(Variant(label, cfg, str(config)))
    if issues:
        raise ConfigError(issues)
    base = name or f"{variants[0].config.name}-sweep"
    return CompareInputs(base, variants)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moska-sim sweep",
        description="Run one experiment over a grid of parameter values and write one "
                    "comparison report (the cartesian product of every --param).")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment YAML")
    p.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a field and its values, e.g. workload.shared.tokens=1Mi,4Mi,16Mi "
                        "(repeatable: the grid is the product)")
    p.add_argument("--name", default=None, help="names the results folder "
                                                "(default <config name>-sweep)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/)")
    p.add_argument("--load-sweep", type=int, default=0, metavar="N",
                   help="also rerun each point at N offered loads (default 0: none)")
    p.add_argument("--sweep-requests", type=int, default=None, metavar="R",
                   help="run.requests of each load-sweep point")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="simulations run in parallel processes (results do not depend on it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field at every point, e.g. run.requests=200")
    p.add_argument("--no-progress", action="store_true", help="no per-run progress lines")
    return p


def sweep_main(argv: list[str]) -> int:
    """Entry point of ``moska-sim sweep``."""
    args = _parser().parse_args(argv)
    if args.jobs < 1 or args.load_sweep < 0:
        print("moska-sim sweep: error: --jobs must be >= 1 and --load-sweep >= 0",
              file=sys.stderr)
        return 2
    try:
        params = [parse_param(t) for t in args.param]
        extra = dict(parse_assignment(item) for item in args.set)
        inputs = grid_inputs(args.config, params, extra, args.name)
        settings = SweepSettings.from_mapping({}, "", points=args.load_sweep,
                                              requests=args.sweep_requests)
    except ConfigError as exc:
        n = len(exc.issues)
        print(f"moska-sim sweep: {n} error{'s' if n != 1 else ''}\n{exc}", file=sys.stderr)
        return 2
    print(f"sweep: {len(inputs.variants)} point(s) of {args.config}", file=sys.stderr)
    result = run_compare(inputs, args.out, settings, args.jobs, progress=not args.no_progress)
    print_result(result)
    return 1 if result.failures else 0


__all__ = ["GridParam", "grid_inputs", "parse_param", "split_values", "sweep_main"]
