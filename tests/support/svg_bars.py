"""The bars of a server-rendered SVG chart, read from a page as the tests' reader sees them."""

from __future__ import annotations

from html.parser import HTMLParser


class _Bars(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "g" and "data-bar" in attributes:
            self.bars.append(attributes)
        elif tag == "rect" and self.bars and "width" not in self.bars[-1]:
            self.bars[-1]["width"] = attributes.get("width", "")


def svg_bars(html: str) -> list[dict[str, str]]:
    """Every ``<g data-bar>``'s attributes (entities decoded), with its ``<rect>``'s width."""
    parser = _Bars()
    parser.feed(html)
    return parser.bars
