"""Render a :class:`~sim.report.document.Document` as one self-contained HTML file.

Images are embedded as base64 ``data:`` URIs and the CSS is inline, so the file opens
offline, can be mailed as one attachment, and references nothing outside itself.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

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
from sim.report.tables import escape_html, html_table

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 1.5rem 2rem 3rem; color: #1f2328;
       line-height: 1.45; background: #fff; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: .2rem; }
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
.table-wrap { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .65rem; text-align: left;
         white-space: normal; overflow-wrap: break-word; }
td.num, td:first-child { white-space: nowrap; }
td { max-width: 40rem; }
th { background: #f6f8fa; font-weight: 600; white-space: normal; vertical-align: bottom; }
tbody tr:nth-child(even) { background: #fafbfc; }
.num { text-align: right; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .85rem; color: #57606a; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .5rem .8rem;
        margin: .8rem 0; font-size: .92rem; }
ul.verdict { background: #f0f6ff; border: 1px solid #b6d4fe; border-radius: 6px;
             padding: .7rem 1rem .7rem 2rem; margin: .8rem 0 1.2rem; }
ul.verdict li { margin: .25rem 0; overflow-wrap: anywhere; }
ul.verdict li:first-child { font-weight: 600; }
ul.links { columns: 2 18rem; }
p, li, figcaption, .note { overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .85rem;
      border: 1px solid #eaeef2; }
""".strip()


def image_data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI for embedding image bytes in HTML."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_html(doc: Document) -> str:
    """The document as a complete HTML page with inline CSS and embedded images."""
    body: list[str] = [f"<h1>{escape_html(doc.title)}</h1>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            level = max(2, min(block.level, 6))
            body.append(f"<h{level}>{escape_html(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{escape_html(block.text)}</p>")
        elif isinstance(block, Note):
            body.append(f'<div class="note"><strong>Note:</strong> {escape_html(block.text)}</div>')
        elif isinstance(block, Table):
            if block.rows:
                body.append(html_table(block.rows, block.columns, block.caption))
        elif isinstance(block, Image):
            body.append(
                f'<figure><img src="{image_data_uri(block.data)}" alt="{escape_html(block.alt)}">'
                f"<figcaption>{escape_html(block.alt)}</figcaption></figure>"
            )
        elif isinstance(block, Bullets):
            if block.items:
                cls = f' class="{escape_html(block.style)}"' if block.style else ""
                items = "".join(f"<li>{escape_html(item)}</li>" for item in block.items)
                body.append(f"<ul{cls}>{items}</ul>")
        elif isinstance(block, Links):
            if block.items:
                cap = (f"<p class=\"links-caption\">{escape_html(block.caption)}</p>"
                       if block.caption else "")
                items = "".join(
                    f'<li><a href="{escape_html(quote(href))}">{escape_html(text)}</a></li>'
                    for text, href in block.items)
                body.append(f'{cap}<ul class="links">{items}</ul>')
        elif isinstance(block, Code):
            body.append(f"<pre><code>{escape_html(block.text.rstrip())}</code></pre>")
        else:  # pragma: no cover - Block is a closed union
            raise TypeError(f"unknown block {type(block).__name__}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape_html(doc.title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
