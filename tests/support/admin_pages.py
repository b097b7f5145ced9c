"""An admin page's text as a reader sees it: help texts and messages, entities decoded and
markup dropped as a browser would (an unknown tag such as ``<slug>`` shows nothing)."""

from __future__ import annotations

from html.parser import HTMLParser


class _TextsOfClass(HTMLParser):
    """The text inside each element of one tag and CSS class, nested elements included."""

    def __init__(self, tag: str, css_class: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tag = tag
        self.css_class = css_class
        self.texts: list[str] = []
        # Depth of open ``tag`` elements inside the current match; None outside one.
        self.depth: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != self.tag:
            return
        if self.depth is not None:
            self.depth += 1
        elif self.css_class in (dict(attrs).get("class") or "").split():
            self.depth = 0
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self.tag and self.depth is not None:
            self.depth = None if self.depth == 0 else self.depth - 1

    def handle_data(self, data: str) -> None:
        if self.depth is not None:
            self.texts[-1] += data


def texts_of_class(html: str, tag: str, css_class: str) -> list[str]:
    """The text of every ``<tag class="... css_class ...">`` of ``html``, white space
    collapsed: what the reader sees there."""
    parser = _TextsOfClass(tag, css_class)
    parser.feed(html)
    return [" ".join(text.split()) for text in parser.texts]


def help_texts(html: str) -> list[str]:
    """The help texts of an admin form, as shown under its fields."""
    return texts_of_class(html, "div", "help")


def messages(html: str) -> list[str]:
    """The messages the admin shows at the top of a page (success, warning, error)."""
    return texts_of_class(html, "ul", "messagelist")
