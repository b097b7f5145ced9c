"""Tables read from a rendered page as a reader sees them: rows picked by their data-
attributes, cells by their data-cell (or class) attribute."""

from __future__ import annotations

from html.parser import HTMLParser


class _Rows(HTMLParser):
    def __init__(self, row_attribute: str | None, table_id: str | None) -> None:
        super().__init__()
        self.row_attribute = row_attribute
        self.table_id = table_id
        self.in_table = table_id is None
        self.rows: list[tuple[dict[str, str], dict[str, str]]] = []
        self.in_row = False
        self.cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "table" and self.table_id is not None and attributes.get("id") == self.table_id:
            self.in_table = True
        elif tag == "tr":
            self.in_row = self.in_table and (
                self.row_attribute is None or self.row_attribute in attributes
            )
            if self.in_row:
                self.rows.append((attributes, {}))
        elif self.in_row and tag in ("td", "th"):
            self.cell = attributes.get("data-cell") or attributes.get("class") or None
            if self.cell is not None:
                self.rows[-1][1][self.cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.cell = None
        elif tag == "tr":
            self.in_row = False
        elif tag == "table" and self.table_id is not None:
            self.in_table = False

    def handle_data(self, data: str) -> None:
        if self.in_row and self.cell is not None:
            self.rows[-1][1][self.cell] += data


def rows_with(
    html: str, row_attribute: str | None = None, *, table_id: str | None = None
) -> list[tuple[dict[str, str], dict[str, str]]]:
    """Every ``<tr>`` carrying ``row_attribute`` (or every one, in the table ``table_id`` if
    given): (its attributes, its cells' text by their data-cell or class attribute, entities
    decoded and white space collapsed)."""
    parser = _Rows(row_attribute, table_id)
    parser.feed(html)
    return [
        (attributes, {key: " ".join(text.split()) for key, text in cells.items()})
        for attributes, cells in parser.rows
    ]
