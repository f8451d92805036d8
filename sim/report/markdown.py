"""Render a :class:`~sim.report.document.Document` as Markdown (images as relative links)."""

from __future__ import annotations

from sim.report.document import (
    Bullets,
    Code,
    Document,
    Heading,
    Image,
    Links,
    Note,
    Paragraph,
    Table,
)
from sim.report.tables import markdown_table


def render_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown; images link to PNGs beside the file."""
    parts: list[str] = [f"# {doc.title}"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * max(2, min(block.level, 6))} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Note):
            parts.append(f"> **Note:** {block.text}")
        elif isinstance(block, Table):
            if not block.rows:
                continue
            table = markdown_table(block.rows, block.columns)
            parts.append(f"*{block.caption}*\n\n{table}" if block.caption else table)
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.filename})")
        elif isinstance(block, Bullets):
            if block.items:
                parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Links):
            if block.items:
                lines = [f"- [{text}]({href.replace(' ', '%20')})" for text, href in block.items]
                parts.append((f"*{block.caption}*\n\n" if block.caption else "")
                             + "\n".join(lines))
        elif isinstance(block, Code):
            fence = "````" if "```" in block.text else "```"
            parts.append(f"{fence}{block.lang}\n{block.text.rstrip()}\n{fence}")
        else:  # pragma: no cover - Block is a closed union
            raise TypeError(f"unknown block {type(block).__name__}")
    return "\n\n".join(parts) + "\n"
