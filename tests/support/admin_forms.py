"""Posting admin change pages as a browser would, and reading the tables they answer with.

``change_form_data`` turns a rendered change page (a test client response) into what its
Save button would post unchanged: the main form and every inline with its management form,
including the hidden initial values Django compares against to tell what changed. Tests then
change or add the fields they are about.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from django import forms


def _add_form(data: dict[str, Any], form: forms.BaseForm) -> None:
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field.widget, forms.CheckboxInput):
            posted: Any = "on" if value else None
        elif value is None:
            posted = ""
        elif isinstance(value, list | tuple):
            posted = [str(item) for item in value]
        else:
            posted = str(value)
        keys = [form.add_prefix(name)]
        if field.show_hidden_initial:
            keys.append(form.add_initial_prefix(name))
        for key in keys:
            if posted is not None:
                data[key] = posted


def change_form_data(response: Any) -> dict[str, Any]:
    """What the admin change page ``response`` posts when saved without changes."""
    data: dict[str, Any] = {}
    _add_form(data, response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        _add_form(data, inline.formset.management_form)
        for form in inline.formset.forms:
            _add_form(data, form)
    return data


def inline_add(data: dict[str, Any], prefix: str, **fields: Any) -> None:
    """Add one new row to the inline ``prefix`` of ``data`` (as "Add another" would)."""
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    data[f"{prefix}-TOTAL_FORMS"] = str(index + 1)
    for name, value in fields.items():
        data[f"{prefix}-{index}-{name}"] = value


class _Table(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: list[dict[str, str]] = []
        self.cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr" and "data-flavor" in attributes:
            self.rows.append({})
        elif self.inside and tag == "td" and self.rows:
            self.cell = attributes.get("class") or ""
            self.rows[-1][self.cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td":
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.rows[-1][self.cell] += data


def table_rows(html: str, table_id: str) -> list[dict[str, str]]:
    """The rows (``<tr data-...>``) of the table ``table_id``: each cell's text by its class,
    as a reader sees it (entities decoded)."""
    parser = _Table(table_id)
    parser.feed(html)
    return [{key: " ".join(text.split()) for key, text in row.items()} for row in parser.rows]
