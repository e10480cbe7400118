"""Exact unique sessions: the per-session state and the first-seen tables it drives.

`session_state` keeps, per session (human events only), the distinct entries
(15-minute bucket, page, os, browser, device, referrer host) it has events for. Every write
goes through one upsert of that table, so concurrent writers of the same session serialise on
its row. Statement-level triggers then read the old and new versions of the changed rows
(transition tables) and apply the difference of first-seen transitions to every `ses` table:
for each (session, dims) the sorted buckets b1 < b2 < ... give rows (b1, -inf), (b2, b1), ...
"""
from __future__ import annotations

from psycopg import sql

from .catalog import SES_BASE, Family, families

ENTRY_TYPE = "session_entry"
STATE_TABLE = "session_state"
_ENTRY_FIELDS = {"page": "page", "os": "os", "browser": "browser", "device": "device", "referrer": "ref"}


def entry_row_sql(alias: str = "") -> str:
    """ROW(...)::session_entry from an events row (optionally qualified by `alias`)."""
    p = f"{alias}." if alias else ""
    return (f"ROW(floor(extract(epoch FROM {p}time) / {SES_BASE})::int, {p}page, {p}os, {p}browser, "
            f"{p}device, {p}referrer_host)::{ENTRY_TYPE}")


def state_ddl(s: sql.Identifier) -> list[sql.Composable]:
    return [
        sql.SQL("""DO $$ BEGIN
            CREATE TYPE {}.{} AS (b int, page text, os text, browser text, device text, ref text);
            EXCEPTION WHEN duplicate_object THEN NULL; END $$""").format(s, sql.Identifier(ENTRY_TYPE)),
        sql.SQL("""CREATE TABLE IF NOT EXISTS {}.{} (
            session_id text PRIMARY KEY,
            entries {}.{}[] NOT NULL)""").format(s, sql.Identifier(STATE_TABLE), s, sql.Identifier(ENTRY_TYPE)),
    ]


def _apply_delta(s: sql.Identifier, fam: Family, grain: int, delta: str) -> sql.Composable:
    """Add first-seen transitions of the (session, ver, e) rows in `delta` (ver = +1 new, -1 old)."""
    k = grain // SES_BASE
    cols = [sql.Identifier(c) for c in fam.columns]
    fields = [sql.SQL("(e).{} AS {}").format(sql.Identifier(_ENTRY_FIELDS[d]), sql.Identifier(c))
              for d, c in zip(fam.dims, fam.columns)]
    col_list = sql.SQL("").join(sql.SQL(", {}").format(c) for c in cols)
    part = sql.SQL("").join(sql.SQL(", {}").format(c) for c in cols)
    return sql.SQL("""
        INSERT INTO {s}.{table} AS t (bucket{cols}, prev, n)
        SELECT to_timestamp(g::bigint * {base}){cols},
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * {base}) END,
               sum(ver)
        FROM (SELECT ver, g{cols}, lag(g) OVER (PARTITION BY ver, session_id{part} ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, session_id{fields}, ((e).b / {k}) * {k} AS g
                    FROM ({delta}) d0) d1) d2
        GROUP BY g{cols}, p
        HAVING sum(ver) <> 0
        ORDER BY 1{cols}, 3
        ON CONFLICT (bucket{cols}, prev) DO UPDATE SET n = t.n + excluded.n""").format(
        s=s, table=sql.Identifier(fam.table(grain)), cols=col_list, part=part,
        base=sql.Literal(SES_BASE), k=sql.Literal(k), delta=sql.SQL(delta),
        fields=sql.SQL("").join(sql.SQL(", ") + f for f in fields))


_DELTAS = {
    "insert": "SELECT session_id, 1 AS ver, e FROM new_rows, unnest(entries) AS e",
    "update": ("SELECT session_id, 1 AS ver, e FROM new_rows, unnest(entries) AS e "
               "UNION ALL SELECT session_id, -1, e FROM old_rows, unnest(entries) AS e"),
    "delete": "SELECT session_id, -1 AS ver, e FROM old_rows, unnest(entries) AS e",
}
_REFERENCING = {"insert": "NEW TABLE AS new_rows", "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                "delete": "OLD TABLE AS old_rows"}


def trigger_ddl(s: sql.Identifier) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for op, delta in _DELTAS.items():
        body = sql.SQL(";\n").join(_apply_delta(s, fam, g, delta)
                                   for fam in families("ses") for g in fam.grains)
        fn = sql.Identifier(f"rollup_ses_on_{op}")
        out.append(sql.SQL("""CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
            BEGIN
            {body};
            RETURN NULL;
            END $fn$""").format(s=s, fn=fn, body=body))
        out.append(sql.SQL("""CREATE OR REPLACE TRIGGER {trg} AFTER {op} ON {s}.{state}
            REFERENCING {ref} FOR EACH STATEMENT EXECUTE FUNCTION {s}.{fn}()""").format(
            trg=sql.Identifier(f"rollup_ses_{op}"), op=sql.SQL(op.upper()), s=s,
            state=sql.Identifier(STATE_TABLE), ref=sql.SQL(_REFERENCING[op]), fn=fn))
    return out


def upsert_state_sql(source: sql.Composable, *, replace: bool) -> sql.Composable:
    """Upsert (session_id, entries) rows from `source`, in session order (lock order).

    replace=False (ingest): add entries not already there; a no-op for known entries.
    replace=True (rebuild): the entries become exactly the given ones.
    """
    if replace:
        action = sql.SQL("""SET entries = excluded.entries
            WHERE NOT (excluded.entries <@ s.entries AND s.entries <@ excluded.entries)""")
    else:
        action = sql.SQL("""SET entries = s.entries
                || ARRAY(SELECT unnest(excluded.entries) EXCEPT SELECT unnest(s.entries))
            WHERE NOT (excluded.entries <@ s.entries)""")
    return sql.SQL("""INSERT INTO {state} AS s (session_id, entries)
        SELECT session_id, entries FROM ({source}) src ORDER BY session_id
        ON CONFLICT (session_id) DO UPDATE {action}""").format(
        state=sql.Identifier(STATE_TABLE), source=source, action=action)


def entries_from(relation: str, where: str = "TRUE") -> sql.Composable:
    """(session_id, entries) aggregated from an events-shaped relation (human events only)."""
    return sql.SQL("""SELECT session_id, array_agg(DISTINCT {entry}) AS entries
        FROM {rel} WHERE NOT is_bot AND session_id IS NOT NULL AND ({where})
        GROUP BY session_id""").format(entry=sql.SQL(entry_row_sql()), rel=sql.SQL(relation),
                                        where=sql.SQL(where))
