"""Writes a use case queues for its commit, and their values as the database takes them.

A unit of work collects the rows it changes as plain values instead of ORM objects (the ORM's
flush cost more than the rest of a click) and hands them over at the commit, where each
database sends them its own way: PostgreSQL as one statement (:mod:`core.combined_writes`),
SQLite in the trip of the ``COMMIT`` (:mod:`core.sqlite_writes`). Both bind each value through
its column type (JSON serialised, times made UTC) and fill the Python-side defaults a Core
``insert`` or ``update`` would, so a row lands the same whichever way it went.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

# The column holding a row's version, for a table whose updates are guarded by it: the database
# moves it on every update, by any writer (``tickets``: migration 0026's triggers).
ROW_VERSION = "row_version"


@dataclass(frozen=True)
class RowsInsert:
    """Rows for one table, all with the same columns; with ``ignore_conflicts_on``, a row whose
    value of that unique column is stored already is skipped (``ON CONFLICT DO NOTHING``)."""

    table: Table
    rows: Sequence[dict[str, Any]]
    ignore_conflicts_on: str | None = None


@dataclass(frozen=True)
class RowUpdate:
    """``UPDATE table SET values WHERE id = row_id``; columns with an ``onupdate`` that
    ``values`` leaves out get it, as a Core update would.

    ``unchanged_since``: the row's version as read (its :data:`ROW_VERSION` column). The update
    then happens only if nobody changed the row since, and so does every other write of the same
    call: all or nothing, with no lock held between the read and the write.
    """

    table: Table
    row_id: int
    values: dict[str, Any] = field(default_factory=dict)
    unchanged_since: int | None = None


Write = RowsInsert | RowUpdate


@dataclass(frozen=True)
class TableFacts:
    """What filling and binding a table's values needs, worked out once per table: looking it
    up again for every value cost more than the values themselves."""

    processors: dict[str, Any]
    python_defaults: tuple[tuple[str, Any], ...]  # (column, its Python-side default)
    onupdate: tuple[tuple[str, Any], ...]
    _binders: dict[tuple[str, ...], Callable[[Mapping[str, Any]], tuple[Any, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def bound(self, name: str, value: Any) -> Any:
        processor = self.processors[name]  # a KeyError for a column the table does not have
        # None too: a JSON column stores it as JSON null, as an ORM or Core insert does.
        return processor(value) if processor is not None else value

    def binder(self, columns: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
        """What binds a row's ``columns``, in that order, as :meth:`bound` binds each; made
        once per set of columns, so that a row of thirty values looks up no processor."""
        known = self._binders.get(columns)
        if known is not None:
            return known
        # A KeyError here, too, for a column the table does not have.
        steps = tuple((name, self.processors[name]) for name in columns)

        def bind(row: Mapping[str, Any]) -> tuple[Any, ...]:
            return tuple(
                processor(row[name]) if processor is not None else row[name]
                for name, processor in steps
            )

        self._binders[columns] = bind
        return bind

    def defaults(self, row: dict[str, Any]) -> dict[str, Any]:
        """The Python-side defaults of the columns ``row`` leaves out."""
        return {name: _default_value(d) for name, d in self.python_defaults if name not in row}

    def onupdates(self, values: dict[str, Any]) -> dict[str, Any]:
        return {name: _default_value(d) for name, d in self.onupdate if name not in values}


@functools.cache
def table_facts(table: Table, dialect: Dialect) -> TableFacts:
    return TableFacts(
        processors={
            column.name: column.type.dialect_impl(dialect).bind_processor(dialect)
            for column in table.columns
        },
        python_defaults=tuple(
            (column.name, column.default) for column in table.columns if column.default is not None
        ),
        onupdate=tuple(
            (column.name, column.onupdate)
            for column in table.columns
            if column.onupdate is not None
        ),
    )


def _default_value(default: Any) -> Any:
    if getattr(default, "is_scalar", False):
        return default.arg
    if getattr(default, "is_callable", False):
        return default.arg(None)  # SQLAlchemy wraps a no-argument function to take a context
    raise NotImplementedError(f"a {type(default).__name__} default is not a Python value")


def is_guarded(write: Write) -> bool:
    """Whether ``write`` is an update that happens only if its row is unchanged since read."""
    return isinstance(write, RowUpdate) and write.unchanged_since is not None


def guarded_first(writes: Sequence[Write]) -> list[Write]:
    """``writes`` with the update guarded by ``unchanged_since`` (if any) first, so that it
    decides before anything else is written whether anything is.

    At most one update may be guarded: two could not be made to wait for each other, and one
    could be written while the other found its row changed.
    """
    guarded = [w for w in writes if is_guarded(w)]
    if len(guarded) > 1:
        raise ValueError("at most one update of a call may carry unchanged_since")
    return guarded + [w for w in writes if not any(w is g for g in guarded)]
