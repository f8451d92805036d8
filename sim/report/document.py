"""A report as a list of blocks, built once and rendered to Markdown and to HTML.

Building the content once keeps ``report.md`` and ``report.html`` saying the same thing;
the renderers (:mod:`sim.report.markdown`, :mod:`sim.report.html`) only decide the syntax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Heading:
    """A section title; level 2 is a section, 3 a subsection (level 1 is the title)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Plain text (no markup), one paragraph."""

    text: str


@dataclass(frozen=True)
class Note:
    """A remark set apart from the text, e.g. why a section was skipped."""

    text: str


@dataclass(frozen=True)
class Table:
    """Rows of dicts; cells are formatted by :mod:`sim.report.tables`."""

    rows: Sequence[Mapping[str, Any]]
    columns: Sequence[str] | None = None
    caption: str | None = None


@dataclass(frozen=True)
class Image:
    """A PNG written next to the report: linked from Markdown, embedded in HTML."""

    filename: str
    alt: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Code:
    """Preformatted text such as the resolved config."""

    text: str
    lang: str = ""


@dataclass(frozen=True)
class Bullets:
    """A list of plain-text items; ``style`` names a look (``"verdict"``: a boxed summary
    at the top of a report), ignored by Markdown."""

    items: Sequence[str]
    style: str = ""


@dataclass(frozen=True)
class Links:
    """A list of (text, relative path) links, e.g. to each run's own report; the paths
    stay inside the results folder, so the reports still open offline."""

    items: Sequence[tuple[str, str]]
    caption: str | None = None


Block = Heading | Paragraph | Note | Table | Image | Code | Bullets | Links


@dataclass
class Document:
    """A titled sequence of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        """Append blocks; returns self so sections read as one chain."""
        self.blocks.extend(blocks)
        return self
