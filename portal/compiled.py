"""Queries compiled once, run many times: the Hub API's direct reads (outposts/api/direct/),
the row lock and look-up every start makes, and the server lock of the worker's claim and
landing (outposts/selectors.py).

The ORM compiles a queryset to SQL for every run, which cost more than a poll's read itself,
and 2-3 ms of CPU for a select of a model with many fields (bench/README.md). A query built
once with stand-ins in place of a request's values (values no request can hold) is compiled
once per database; each run puts the request's values where the stand-ins were, and converts
the columns as the ORM would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.db.models.query import get_related_populators
from django.db.transaction import TransactionManagementError


def text_stand_in(name: str) -> str:
    """A stand-in for a text value: no value with a control character reaches a query."""
    return f"\x00{name}"


def id_stand_ins(count: int) -> tuple[int, ...]:
    """``count`` distinct stand-ins for ids, which are positive."""
    return tuple(-(2**62) + n for n in range(1, count + 1))


class Compiled:
    """A query compiled once for the database in use; each run fills in a request's values
    for the stand-ins, and converts the columns as the ORM would (SQLite's dates, booleans and
    UUIDs are text and integers to its driver)."""

    def __init__(self, queryset: QuerySet[Any, Any]) -> None:
        query = queryset.query
        compiler = query.get_compiler(queryset.db)
        self.sql, self.params = compiler.as_sql()
        # The backend's converters read only settings of the connection they were taken from
        # (its time zone), never its session: any thread's runs may use them.
        self.converters = compiler.get_converters(
            [expression for expression, _, _ in compiler.select[: compiler.col_count]]
        )
        # The names values() gives the columns (ValuesIterable's).
        self.names = list(query.selected or ()) or [
            *query.extra_select,
            *query.values_select,
            *query.annotation_select,
        ]
        self.model = queryset.model
        # As the ORM: a lock only where the database has one (not on SQLite).
        self.locks = query.select_for_update and compiler.connection.features.has_select_for_update
        # A query of model rows (no values(), no annotations) loads instances as the ORM's
        # ModelIterable does: the model's own columns first, then each select_related row's.
        self.model_rows = not self.names
        if self.model_rows:
            own = compiler.klass_info["select_fields"]
            self.own_columns = slice(own[0], own[-1] + 1)
            self.own_names = [
                column[0].target.attname for column in compiler.select[self.own_columns]
            ]
            self.related = get_related_populators(
                compiler.klass_info, compiler.select, compiler.connection.alias
            )

    def rows(self, values: dict[Any, Any]) -> list[tuple[Any, ...]]:
        if self.locks and connection.get_autocommit():
            # What the ORM raises: a lock outside a transaction would end with its statement.
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        params = [values.get(param, param) for param in self.params]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if not self.converters:
            return rows
        converted = []
        for row in rows:
            columns = list(row)
            for position, (converters, expression) in self.converters.items():
                for converter in converters:
                    columns[position] = converter(columns[position], expression, connection)
            converted.append(tuple(columns))
        return converted

    def instances(self, values: dict[Any, Any]) -> list[Any]:
        """The rows as model instances, with their select_related rows, as the ORM loads
        them (a query of model rows only)."""
        assert self.model_rows, "instances() needs a query of model rows"
        loaded = []
        for row in self.rows(values):
            instance = self.model.from_db(connection.alias, self.own_names, row[self.own_columns])
            for related in self.related:
                related.populate(row, instance)
            loaded.append(instance)
        return loaded

    def dicts(self, values: dict[Any, Any]) -> list[dict[str, Any]]:
        """The rows as values() gives them."""
        return [dict(zip(self.names, row, strict=True)) for row in self.rows(values)]


_compiled: dict[tuple[Any, ...], Compiled] = {}


def compiled(build: Callable[..., QuerySet[Any, Any]], **shape: Any) -> Compiled:
    """``build(**shape)`` compiled, once per database and shape."""
    key = (connection.alias, build, *sorted(shape.items()))
    query = _compiled.get(key)
    if query is None:
        query = _compiled[key] = Compiled(build(**shape))
    return query
