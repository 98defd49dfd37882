"""Writes that cost one SQL statement and one (implicit) commit, where the ORM's helpers cost four.

``get_or_create`` is a SELECT, then BEGIN, INSERT, COMMIT (a savepoint too inside a transaction), and
retries on a race; ``bulk_create(ignore_conflicts=True)`` wraps its INSERT in BEGIN/COMMIT and cannot
say whether it inserted. In autocommit mode one ``INSERT … ON CONFLICT`` statement does the same work
atomically: the database's unique index decides, so concurrent writers cannot both insert.

Both helpers build their SQL with Django's own insert compiler (field conversion, ``auto_now``
defaults, quoting) and work on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections, router
from django.db.models import Field, Model
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery


def _insert_fields(model: type[Model]) -> list[Field]:
    opts = model._meta
    return [f for f in opts.local_concrete_fields if f is not opts.auto_field and not f.generated]


def _execute(query: InsertQuery, using: str) -> int:
    compiler = query.get_compiler(using=using)
    rows = 0
    with connections[using].cursor() as cursor:
        for sql, params in compiler.as_sql():
            cursor.execute(sql, params)
            rows += max(cursor.rowcount, 0)
    return rows


def insert_if_absent(obj: Model, *, using: str | None = None) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING``; True when this call inserted the row.

    ``obj``'s primary key is not set afterwards (nothing is returned, to keep one round trip).
    """
    model = type(obj)
    using = using or router.db_for_write(model, instance=obj)
    query = InsertQuery(model, on_conflict=OnConflict.IGNORE)
    query.insert_values(_insert_fields(model), [obj])
    return _execute(query, using) == 1


def upsert(obj: Model, *, unique: str, update: Iterable[str], using: str | None = None,
           unless: tuple[str, Iterable[str]] | None = None) -> None:
    """``INSERT … ON CONFLICT (unique) DO UPDATE SET`` the ``update`` fields to ``obj``'s values.

    Fields not in ``update`` keep the stored row's values (e.g. a creation date); ``auto_now`` fields
    listed in ``update`` take the current time, as ``save()`` would give them. ``unless=(field, values)``
    leaves a stored row alone whose ``field`` holds one of ``values`` (``… DO UPDATE … WHERE``), decided
    by the database in the same statement.
    """
    model = type(obj)
    opts = model._meta
    using = using or router.db_for_write(model, instance=obj)
    query = InsertQuery(
        model, on_conflict=OnConflict.UPDATE,
        update_fields=[opts.get_field(name) for name in update], unique_fields=[opts.get_field(unique)],
    )
    query.insert_values(_insert_fields(model), [obj])
    if unless is None:
        _execute(query, using)
        return
    field, values = unless[0], list(unless[1])
    quote = connections[using].ops.quote_name
    guard = (f" WHERE {quote(opts.db_table)}.{quote(opts.get_field(field).column)} NOT IN "
             f"({', '.join(['%s'] * len(values))})")
    [(sql, params)] = query.get_compiler(using=using).as_sql()
    with connections[using].cursor() as cursor:
        cursor.execute(sql + guard, (*params, *values))
