"""A small HTML builder for one self-contained page: every text is escaped unless it is `Safe`
(markup this module built), images are embedded as data URIs, and the page's Content Security
Policy forbids any network request (`default-src 'none'`), so a stray external URL shows up as a
console error rather than a silent fetch."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image


_VOID = {"img", "meta", "br", "hr"}  # elements without an end tag


class Safe(str):
    """Markup built here: inserted as is (everything else is escaped)."""


def esc(content: Any) -> Safe:
    """`content` as markup: Safe passes through, a list is joined, anything else is escaped text."""
    if isinstance(content, Safe):
        return content
    if isinstance(content, (list, tuple)):
        return Safe("".join(esc(c) for c in content))
    return Safe(html.escape("" if content is None else str(content), quote=True))


def tag(name: str, *content: Any, **attrs: Any) -> Safe:
    """<name attrs>content</name>; attrs with a trailing underscore lose it (class_ -> class),
    underscores inside become dashes (data_figure -> data-figure); None/False attrs are left out."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{html.escape(str(value), quote=True)}"')
    if name in _VOID:
        assert not content, f"<{name}> takes no content"
        return Safe(f"<{' '.join(parts)}>")
    return Safe(f"<{' '.join(parts)}>{esc(list(content))}</{name}>")


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG bytes."""
    assert image.dtype == np.uint8 and image.ndim in (2, 3), f"expected (H, W[, 3]) uint8, got {image.shape} {image.dtype}"
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def figure_png(fig: Any, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def img(png: bytes, alt: str, figure_id: str, pixelated: bool = False, width: int | None = None) -> Safe:
    """An embedded PNG; `data-figure` names it for tests, `pixelated` keeps small images sharp when scaled."""
    return tag("img", src=png_data_uri(png), alt=alt, data_figure=figure_id, width=width,
               class_="pixelated" if pixelated else None)


def figure(png: bytes, caption: str, figure_id: str, **kwargs: Any) -> Safe:
    return tag("figure", img(png, caption, figure_id, **kwargs), tag("figcaption", caption))


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], class_: str | None = None) -> Safe:
    """A table of cells (text escaped, Safe cells as markup)."""
    head = tag("thead", tag("tr", [tag("th", h) for h in header]))
    body = tag("tbody", [tag("tr", [tag("td", c) for c in row]) for row in rows])
    return tag("table", head, body, class_=class_)


def key_values(pairs: Mapping[str, Any]) -> Safe:
    """A two-column table: key | value."""
    return tag("table", tag("tbody", [tag("tr", tag("th", k), tag("td", v)) for k, v in pairs.items()]), class_="kv")


def section(section_id: str, title: str, *content: Any) -> Safe:
    return tag("section", tag("h2", title), *content, id=section_id)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; } table.kv th { background: #fafafa; font-weight: 600; }
figure { margin: .8em 0; } figcaption { font-size: .85em; color: #555; max-width: 60em; }
img { max-width: 100%; height: auto; } img.pixelated { image-rendering: pixelated; }
.answer { font-size: 1.15em; background: #f5f8ff; border-left: 4px solid #4a6fd1; padding: .6em 1em; }
.warning { background: #fff4e5; border-left: 4px solid #e69500; padding: .4em 1em; }
.helped { color: #17702b; font-weight: 600; } .hurt { color: #b3261e; font-weight: 600; }
.samples td { text-align: center; } code { font-size: .9em; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; } .row figure { max-width: 28em; }
"""

# Runs once the page has loaded: marks <body data-figures="decoded/total"> so a headless browser's
# DOM dump shows whether every embedded image decoded, and logs a console error for each that did not.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  images.forEach(function (i) {
    if (!(i.complete && i.naturalWidth > 0)) { console.error("image did not decode: " + i.dataset.figure); }
  });
  document.body.setAttribute("data-figures", decoded.length + "/" + images.length);
});
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def page(title: str, *body: Any) -> str:
    """The whole document: no external resource of any kind."""
    head = [Safe('<meta charset="utf-8">'), tag("meta", http_equiv="Content-Security-Policy", content=CSP),
            Safe('<meta name="viewport" content="width=device-width, initial-scale=1">'), tag("title", title),
            tag("style", Safe(STYLE))]
    return "<!DOCTYPE html>\n" + tag("html", tag("head", head), tag("body", *body, tag("script", Safe(CHECK_SCRIPT))),
                                     lang="en") + "\n"
