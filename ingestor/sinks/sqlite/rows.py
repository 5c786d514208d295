"""Ops as the store's rows: a plan per table (its SQL, its columns' kinds), each op's args validated and
encoded as its columns hold them, as Convex's validators would accept them (`Rejected` otherwise).

The appends most ops are (`plain_row_of`, `event_row`) have inlined fast paths; anything they do not
settle takes the general path (`coerce_args`), unchanged.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

from ingestor.ops import EventArgs
from ingestor.sinks.json_text import dumps_json
from ingestor.sinks.sqlite.schema import TABLES, Column, Table

INT64: Final = 2**63


class Rejected(Exception):
    """An operation the store cannot hold (deterministic: retrying cannot help)."""


def loads_json(text: str) -> Any:
    # The stdlib, not orjson: orjson reads integers beyond 64 bits as floats, losing digits.
    return json.loads(text)


def encode_value(column: Column, value: Any) -> Any:
    """A present argument as the store holds it; `Rejected` when Convex's validator would refuse it."""
    kind = column.kind
    kind_of = type(value)
    if kind == "text":
        if kind_of is str:
            return value
    elif kind == "int" or kind == "num":
        if (kind_of is int and -INT64 <= value < INT64) or (kind_of is float and math.isfinite(value)):
            return value
        if kind_of is int:
            raise Rejected(f"{column.name}: integer beyond 64 bits")
    elif kind == "bool":
        if kind_of is bool:
            return value
    elif kind == "strings":
        if kind_of is list and all(type(v) is str for v in value):
            return value  # kept as a list: the merge rules look at it; JSON text when bound
    else:
        return dumps_json(value)  # `any` columns are opaque JSON text from here on
    raise Rejected(f"{column.name}: expected {kind}, got {kind_of.__name__}")


@dataclass(frozen=True, slots=True)
class TablePlan:
    """Precomputed per table: what the per-op loop needs, and the SQL."""

    table: Table
    names: tuple[str, ...]
    columns: dict[str, Column]
    kinds: dict[str, str]
    list_columns: tuple[str, ...]
    json_siblings: dict[str, Column]
    required: frozenset[str]
    plain: dict[str, tuple[int, type]] | None
    """Append tables: each text or int column's position in a row (key first) and its value's type;
    None for upsert tables, and for tables with other kinds (those take the general path)."""
    required_positions: tuple[int, ...]
    insert_sql: str
    insert_rows_sql: str
    """`insert_sql` for `ROWS_PER_INSERT` rows at once."""
    update_sql: str
    select_sql: str

    @classmethod
    def of(cls, table: Table) -> TablePlan:
        names = table.column_names
        verb = "INSERT" if table.identity else "INSERT OR IGNORE"
        # A JSON column may be bound as the UTF-8 bytes of its text (a raw event's own line): the CAST
        # stores them as that TEXT, byte for byte, sparing a decode to `str` and the encode back.
        marks = ", ".join("CAST(? AS TEXT)" if c.kind == "json" else "?" for c in table.columns)
        insert = f"{verb} INTO {table.name} ({', '.join(names)}) VALUES "
        plain_types = {"text": str, "int": int}
        plain = (
            {c.name: (i, plain_types[c.kind]) for i, c in enumerate(table.columns) if c.name != "key"}
            if table.identity is None and all(c.kind in plain_types for c in table.columns)
            else None
        )
        return cls(
            table=table,
            names=names,
            columns={c.name: c for c in table.columns},
            kinds={c.name: c.kind for c in table.columns},
            list_columns=tuple(c.name for c in table.columns if c.kind == "strings"),
            json_siblings={c.name + "Json": c for c in table.columns if c.kind == "json"},
            required=frozenset(c.name for c in table.columns if c.required),
            plain=plain,
            required_positions=tuple(i for i, c in enumerate(table.columns) if c.required),
            insert_sql=f"{insert}({marks})",
            insert_rows_sql=insert + ", ".join([f"({marks})"] * ROWS_PER_INSERT),
            update_sql=f"UPDATE {table.name} SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
            select_sql=f"SELECT id, {', '.join(names)} FROM {table.name} WHERE {table.identity} = ?",
        )


ROWS_PER_INSERT: Final = 50
"""Rows per INSERT statement (`VALUES (…), (…), …`): one statement run per 50 rows instead of one per
row (measured: events ~8% cheaper to insert; more rows per statement gained nothing more)."""

PLANS: Final = {name: TablePlan.of(table) for name, table in TABLES.items()}


def coerce_args(plan: TablePlan, args: Mapping[str, Any]) -> dict[str, Any]:
    """An op's args as column values: validated, `<column>Json` folded into its column."""
    values: dict[str, Any] = {}
    kinds = plan.kinds
    # A raw event's payload is its whole input line: its own text is stored (as `event_row` does).
    line_json = args.line_json if type(args) is EventArgs else None
    for name, value in args.items():
        # Inline fast paths for the common kinds: this loop runs for every column of every op.
        # Anything they do not settle takes the general path below, unchanged.
        kind = kinds.get(name)
        if kind == "text":
            if type(value) is str:
                values[name] = value
                continue
        elif kind == "int" or kind == "num":
            value_type = type(value)
            if value_type is int:
                if -INT64 <= value < INT64:
                    values[name] = value
                    continue
            elif value_type is float and math.isfinite(value):
                values[name] = value
                continue
        elif kind == "json" and value is not None:
            if line_json is not None and line_json[0] is value:
                values[name] = line_json[1]  # UTF-8 bytes, stored as TEXT (`insert_sql`)
            else:
                values[name] = dumps_json(value)  # `any` columns are opaque JSON text from here on
            continue
        column = plan.columns.get(name)
        if column is None:
            column = plan.json_siblings.get(name)
            if column is None:
                raise Rejected(f"unknown column {name!r} for {plan.table.name}")
            if value is None:
                continue
            if type(value) is not str:
                raise Rejected(f"{name}: expected JSON text")
            values[column.name] = value  # already JSON text: stored as it arrived
        elif value is not None:
            values[name] = encode_value(column, value)
        elif column.kind == "json" and column.required:
            values.setdefault(name, "null")  # a JSON null payload is a value, not an absence
    return values


def sql_value(value: Any) -> Any:
    return dumps_json(value) if type(value) is list else value


def params(names: Iterable[str], row: Mapping[str, Any]) -> list[Any]:
    """Bind parameters for a full row (upserts: lists are still Python lists here)."""
    return [sql_value(row.get(n)) for n in names]


def check_required(plan: TablePlan, row: Mapping[str, Any]) -> None:
    if row.keys() >= plan.required:
        return
    missing = plan.required.difference(row)
    raise Rejected(f"missing required column(s) {', '.join(sorted(missing))}")


@dataclass(slots=True)
class Upsert:
    rowid: int | None
    stored: dict[str, Any] | None
    row: dict[str, Any] | None


def insert_rows(conn: sqlite3.Connection, plan: TablePlan, rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` in order: whole groups of `ROWS_PER_INSERT` per statement, the rest one by one."""
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    if whole:
        flat = list(chain.from_iterable(rows[:whole]))
        step = ROWS_PER_INSERT * len(plan.names)
        conn.executemany(plan.insert_rows_sql, [flat[i : i + step] for i in range(0, len(flat), step)])
    if whole < len(rows):
        conn.executemany(plan.insert_sql, rows[whole:])


def plain_row_of(plan: TablePlan, args: Mapping[str, Any], key: Any) -> list[Any] | None:
    """The row of an append whose values are all of exactly their column's type (text or int) and
    whose required columns are all there, as the general path would make it; None for anything else
    (which takes the general path, and its errors)."""
    plain = plan.plain
    assert plain is not None
    if type(key) is not str or not key:
        return None
    row: list[Any] = [None] * len(plan.names)
    row[0] = key
    for name, value in args.items():
        slot = plain.get(name)
        if slot is None:
            return None
        if value is None:
            continue
        position, kind = slot
        value_type = type(value)
        if value_type is not kind or (value_type is int and not -INT64 <= value < INT64):
            return None
        row[position] = value
    for position in plan.required_positions:
        if row[position] is None:
            return None
    return row


_EVENT_COLUMNS: Final = ("key", "conversationId", "turnId", "method", "payload", "receivedAt")
assert PLANS["events_raw"].names == _EVENT_COLUMNS


def event_row(args: Mapping[str, Any], key: Any) -> list[Any] | None:
    """The `events_raw` row of a plain `appendEvent` (most ops), as `coerce_args` would make it; None
    for anything else (`payloadJson`, unknown columns, unusual types), which takes the general path."""
    cid = args.get("conversationId")
    method = args.get("method")
    at = args.get("receivedAt")
    if (
        type(key) is not str
        or not key
        or type(cid) is not str
        or type(method) is not str
        or type(at) is not int
        or not -INT64 <= at < INT64
        or "payload" not in args
    ):
        return None
    turn = args.get("turnId")
    if turn is not None and type(turn) is not str:
        return None
    if len(args) != (5 if "turnId" in args else 4):
        return None
    payload = args["payload"]
    if type(args) is EventArgs:
        line_json = args.line_json
        if line_json is not None and line_json[0] is payload:
            # The payload is the whole input line: store its own JSON text (exact), not a re-encoding.
            # Bound as its UTF-8 bytes (valid: the line parsed as JSON), stored as TEXT (`insert_sql`).
            return [key, cid, turn, method, line_json[1], at]
    return [key, cid, turn, method, "null" if payload is None else dumps_json(payload), at]


def with_column(args: Mapping[str, Any], name: str, value: Any) -> Mapping[str, Any]:
    """`args` with one column changed, a raw event's still carrying its line's own text."""
    if isinstance(args, EventArgs):
        event = EventArgs(args)
        event.line_json = args.line_json  # still this payload's own text
        event[name] = value
        return event
    return {**args, name: value}
