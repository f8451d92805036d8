"""``moska-sim sweep``: one experiment over a grid of parameter values, as one comparison.

``--param workload.shared.tokens=1Mi,4Mi,16Mi --param batching.window_us=0,100`` makes
the 3 x 2 configs of the cartesian product (first parameter slowest), labels each by its
values (``tokens=1Mi,window_us=0``; ``{zipf: 1.1}`` becomes ``zipf-1.1``) and runs them through ``run_compare``: the same report
as ``moska-sim compare``, with a table of the swept values beside each row.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.config import ConfigError, Issue, load_config, parse_assignment
from sim.studies.variants import CompareInputs, Variant

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


__all__ = ["GridParam", "grid_inputs", "parse_param", "split_values"]
