"""Pieces every report uses: writing figures and the Markdown/HTML pair, flattening
nested summary dicts into table rows, byte sizes for people."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sim.report.data import as_float
from sim.report.document import Code, Document, Image
from sim.report.files import atomic_write_bytes, atomic_write_text
from sim.report.html import render_html
from sim.report.markdown import render_markdown
from sim.report.tables import format_number


def emit_image(out_dir: Path, filename: str, alt: str, png: bytes, written: list[Path]) -> Image:
    """Write a PNG beside the report (atomically), record it, return its document block."""
    written.append(atomic_write_bytes(out_dir / filename, png))
    return Image(filename=filename, alt=alt, data=png)


def write_document(out_dir: Path, stem: str, doc: Document, *, html: bool = True) -> list[Path]:
    """Write ``<stem>.md`` (and ``<stem>.html``) for ``doc``; returns the paths written."""
    paths = [atomic_write_text(out_dir / f"{stem}.md", render_markdown(doc))]
    if html:
        paths.append(atomic_write_text(out_dir / f"{stem}.html", render_html(doc)))
    return paths


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {'a.b.c': value}; lists become their compact JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value), default=str)
        else:
            out[name] = value
    return out


def key_value_rows(data: Mapping[str, Any], key: str = "key", value: str = "value") -> list[dict]:
    """A flattened mapping as two-column table rows."""
    return [{key: k, value: v} for k, v in flatten(data).items()]


def format_bytes(n: Any) -> str:
    """1536 -> '1.50 KiB'; non-numbers -> '—'. Binary units, as memory is sized."""
    v = as_float(n)
    if v is None:
        return "—"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while abs(v) >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    return f"{int(v)} B" if i == 0 else f"{format_number(v)} {units[i]}"


def config_block(config: Any) -> Code:
    """The resolved config as YAML (JSON if it holds something YAML cannot represent)."""
    try:
        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)
        return Code(text, "yaml")
    except yaml.YAMLError:
        return Code(json.dumps(config, indent=2, default=str), "json")
