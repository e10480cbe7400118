"""Exact unique sessions (and visitors): the per-subject state and the first-seen tables it drives.

The same machinery counts two subjects (`Subject`): sessions (`session_id`, the `ses` families,
state table `rollup_sessions`) and visitors (`visitor_id`, the daily pseudonym of
privacy/visitor.py; the `vis` families, state table `rollup_visitors`). What follows is written
for sessions; visitors differ only in names and the key's type.

`rollup_sessions` keeps, per session (human events only), the distinct entries
'<15-minute bucket number>|<page>' it has events for: all that the `ses` families
(sessions overall, and per page) need. Every write goes through one upsert of that table, so
concurrent writers of the same session serialise on its row. Statement-level triggers then
read the old and new versions of the changed rows (transition tables) and apply the
difference of first-seen transitions to every `ses` table: for each (session, dims) the
sorted buckets b1 < b2 < ... give rows (b1, -inf), (b2, b1), ...
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from .catalog import SES_BASE, Family, families


@dataclass(frozen=True)
class Subject:
    """What is counted distinct: its events column (also the state table's key), the key's SQL
    type, the rollup kind and the names of the state table, its cap and its triggers."""

    kind: str          # the families' kind: 'ses' | 'vis'
    key: str           # events column and state key
    key_type: str      # 'text' | 'bigint'
    state_table: str
    cap_constraint: str
    trigger_prefix: str
    max_entries: int = 5_000          # see SESSION_MAX_ENTRIES
    max_entry_bytes: int = 2_000_000

    @property
    def collate(self) -> str:
        """Text keys sort in byte order (the same on every database collation)."""
        return ' COLLATE "C"' if self.key_type == "text" else ""


SESSIONS = Subject("ses", "session_id", "text", "rollup_sessions", "rollup_sessions_entries_cap", "rollup_ses")
# A visitor id is shared by everyone behind one address with the same browser on the same day
# (an office behind NAT): its cap is four times a session's, so that a session hits its own
# first, and real traffic practically never hits it. Past it an event is stored without its
# visitor id (ingestion/writer.py): another client behind that address could have filled it, so
# refusing (as a session's cap does) would let it shut the real visitor out for the day.
VISITORS = Subject("vis", "visitor_id", "bigint", "rollup_visitors", "rollup_visitors_entries_cap", "rollup_vis",
                   max_entries=20_000, max_entry_bytes=8_000_000)
SUBJECTS = (SESSIONS, VISITORS)

STATE_TABLE = SESSIONS.state_table
SES_DIMENSIONS = ("page",)  # what an entry records besides the bucket; ses/vis families use no other
assert all(set(f.dims) <= set(SES_DIMENSIONS) for f in families("ses") + families("vis"))


def entry_sql(alias: str = "") -> str:
    """The entry of an events row: bucket number (exact integer arithmetic) and page."""
    p = f"{alias}." if alias else ""
    return (f"((date_part('epoch', time_bucket('{SES_BASE} seconds', {p}time)) / {SES_BASE})::bigint)::text"
            f" || '|' || {p}page")


# A session's stored entries are bounded: every upsert of a session rewrites its array, and
# the triggers unnest it twice. A session id reused forever, or one that sends thousands of
# distinct pages, would otherwise grow without limit. An event that would take a session past
# the cap is refused (check violation of CAP_CONSTRAINT, which the writer answers as that
# event's 422 naming session_id); unique_sessions stays exact for everything stored. Real
# sessions are far below it (the query benchmark's longest: 40 entries).
SESSION_MAX_ENTRIES = SESSIONS.max_entries
SESSION_MAX_ENTRY_BYTES = SESSIONS.max_entry_bytes  # all entries' text together (pages can be 6 KB each)
CAP_CONSTRAINT = SESSIONS.cap_constraint


def _cap_check(subj: "Subject | None" = None) -> sql.Composable:
    subj = subj or SESSIONS
    return sql.SQL(
        "CHECK (cardinality(entries) <= {n} AND octet_length(array_to_string(entries, '')) <= {b})").format(
        n=sql.Literal(subj.max_entries), b=sql.Literal(subj.max_entry_bytes))


def state_ddl(s: sql.Identifier, subj: Subject = SESSIONS) -> list[sql.Composable]:
    table = sql.SQL("{}.{}").format(s, sql.Identifier(subj.state_table))
    return [
        sql.SQL("""CREATE TABLE IF NOT EXISTS {table} (
            {key} {key_type} PRIMARY KEY,
            entries text[] NOT NULL,
            CONSTRAINT {cap} {check})""").format(
            table=table, key=sql.SQL(subj.key), key_type=sql.SQL(subj.key_type),
            cap=sql.Identifier(subj.cap_constraint), check=_cap_check(subj)),
        # A table made before the cap existed gets it NOT VALID: enforced on every write from now
        # on, without a scan of the existing rows (nor a failed start if one is over the cap).
        sql.SQL("""DO $do$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_constraint
                           WHERE conrelid = {regclass}::regclass AND conname = {cap_name}) THEN
                ALTER TABLE {table} ADD CONSTRAINT {cap} {check} NOT VALID;
            END IF;
            END $do$""").format(
            regclass=sql.Literal(table.as_string(None)), cap_name=sql.Literal(subj.cap_constraint),
            table=table, cap=sql.Identifier(subj.cap_constraint), check=_cap_check(subj)),
    ]


def _apply_delta(s: sql.Identifier, fam: Family, grain: int, *, changed_only: bool) -> sql.Composable:
    """A CTE body adding the first-seen transitions of `d0` (ver +1: new state, -1: old state).

    With changed_only, (session, dims) keys whose entries did not change are skipped: their old
    and new transitions are the same and would cancel out.
    """
    k = grain // SES_BASE
    cols = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c)) for c in fam.columns)
    keys = sql.SQL(", ").join([sql.Identifier("sid"), *(sql.Identifier(c) for c in fam.columns)])
    only = (sql.SQL("WHERE ({keys}) IN (SELECT {keys} FROM chg)").format(keys=keys)
            if changed_only else sql.SQL(""))
    n = len(fam.columns)
    return sql.SQL("""
        INSERT INTO {s}.{table} AS t (bucket{cols}, prev, n)
        SELECT to_timestamp(g::bigint * {base}){cols},
               CASE WHEN p IS NULL THEN '-infinity'::timestamptz ELSE to_timestamp(p::bigint * {base}) END,
               sum(ver)
        FROM (SELECT ver, g{cols}, lag(g) OVER (PARTITION BY ver, sid{cols} ORDER BY g) AS p
              FROM (SELECT DISTINCT ver, sid{cols}, (b / {k}) * {k} AS g FROM d0 {only}) d1) d2
        GROUP BY g{cols}, p
        HAVING sum(ver) <> 0
        ORDER BY {order}
        ON CONFLICT (bucket{cols}, prev) DO UPDATE SET n = t.n + excluded.n""").format(
        s=s, table=sql.Identifier(fam.table(grain)), cols=cols, base=sql.Literal(SES_BASE),
        k=sql.Literal(k), only=only, order=sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, n + 3)))


# (session_id, ver, e) rows: ver +1 for the new state, -1 for the old one ({k}: the key).
_DELTAS = {
    "insert": "SELECT {k}, 1 AS ver, e FROM new_rows, unnest(entries) AS e",
    "update": ("SELECT {k}, 1 AS ver, e FROM new_rows, unnest(entries) AS e "
               "UNION ALL SELECT {k}, -1, e FROM old_rows, unnest(entries) AS e"),
    "delete": "SELECT {k}, -1 AS ver, e FROM old_rows, unnest(entries) AS e",
}
_REFERENCING = {"insert": "NEW TABLE AS new_rows", "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                "delete": "OLD TABLE AS old_rows"}


def _trigger_statement(s: sql.Identifier, op: str, subj: Subject = SESSIONS) -> sql.Composable:
    """One statement per trigger call: the delta unnested once, every ses table fed from it."""
    ctes = [sql.SQL("""d0 AS MATERIALIZED (
        SELECT {k}{collate} AS sid, ver, split_part(e, '|', 1)::bigint AS b,
               substr(e, strpos(e, '|') + 1) AS page FROM ({}) x)""").format(
        sql.SQL(_DELTAS[op].format(k=subj.key)), k=sql.SQL(subj.key), collate=sql.SQL(subj.collate))]
    changed_only = op == "update"
    if changed_only:
        # Entries added or removed (a rebuild can remove them); keys without any keep their transitions.
        ctes.append(sql.SQL("""chg AS MATERIALIZED (
            (SELECT sid, b, page FROM d0 WHERE ver = 1 EXCEPT SELECT sid, b, page FROM d0 WHERE ver = -1)
            UNION ALL (SELECT sid, b, page FROM d0 WHERE ver = -1 EXCEPT SELECT sid, b, page FROM d0 WHERE ver = 1))"""))
    for i, (fam, g) in enumerate((f, g) for f in families(subj.kind) for g in f.grains):
        ctes.append(sql.SQL("{} AS ({})").format(sql.Identifier(f"w{i}"),
                                                  _apply_delta(s, fam, g, changed_only=changed_only)))
    return sql.SQL("WITH {} SELECT 1 INTO _done").format(sql.SQL(",\n").join(ctes))


def trigger_ddl(s: sql.Identifier, subj: Subject = SESSIONS) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for op in _DELTAS:
        fn = sql.Identifier(f"{subj.trigger_prefix}_on_{op}")
        # A statement-level trigger fires even when the statement changed no row, which at
        # ingest is most of the time (the upsert skips sessions that hold their entries).
        changed = sql.SQL("new_rows" if op != "delete" else "old_rows")
        out.append(sql.SQL("""CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE _done int;
            BEGIN
            IF NOT EXISTS (SELECT 1 FROM {changed}) THEN
                RETURN NULL;
            END IF;
            {body};
            RETURN NULL;
            END $fn$""").format(s=s, fn=fn, changed=changed, body=_trigger_statement(s, op, subj)))
        out.append(sql.SQL("""CREATE OR REPLACE TRIGGER {trg} AFTER {op} ON {s}.{state}
            REFERENCING {ref} FOR EACH STATEMENT EXECUTE FUNCTION {s}.{fn}()""").format(
            trg=sql.Identifier(f"{subj.trigger_prefix}_{op}"), op=sql.SQL(op.upper()), s=s,
            state=sql.Identifier(subj.state_table), ref=sql.SQL(_REFERENCING[op]), fn=fn))
    return out


def upsert_state_sql(source: sql.Composable, *, replace: bool, filtered: bool = False,
                     subj: Subject = SESSIONS) -> sql.Composable:
    """Upsert (session_id, entries) rows from `source`, in session order (lock order).

    replace=False (ingest): add entries not already there; a no-op for known entries.
    filtered: `source` has only entries that were not stored when it was read
    (new_entries_from); a concurrent writer may have added them since: ON CONFLICT adds
    only what is still missing.
    replace=True (rebuild): the entries become exactly the given ones.
    """
    if replace:
        action = sql.SQL("""SET entries = excluded.entries
            WHERE NOT (excluded.entries <@ s.entries AND s.entries <@ excluded.entries)""")
    else:
        action = sql.SQL("""SET entries = s.entries
                || ARRAY(SELECT unnest(excluded.entries) EXCEPT SELECT unnest(s.entries))
            WHERE NOT (excluded.entries <@ s.entries)""")
    # At ingest most sessions already hold every entry of a batch (a session's events share a
    # page and a quarter hour). ON CONFLICT DO UPDATE ... WHERE false still locks (writes) the
    # row, so those are skipped first by a plain read. Safe with concurrent writers: at ingest
    # entries only grow, so what a committed state already holds stays held.
    # (filtered: `source` already holds only entries the state did not hold when read.)
    skip = sql.SQL("" if replace or filtered else """
        WHERE NOT EXISTS (SELECT 1 FROM {state} cur
                          WHERE cur.{k} = src.{k} AND src.entries <@ cur.entries)""").format(
        state=sql.Identifier(subj.state_table), k=sql.SQL(subj.key))
    return sql.SQL("""INSERT INTO {state} AS s ({k}, entries)
        SELECT {k}, entries FROM ({source}) src{skip} ORDER BY {k}{collate}
        ON CONFLICT ({k}) DO UPDATE {action}""").format(
        state=sql.Identifier(subj.state_table), source=source, skip=skip, action=action,
        k=sql.SQL(subj.key), collate=sql.SQL(subj.collate))


def new_entries_from(relation: str, subj: Subject = SESSIONS) -> sql.Composable:
    """(session_id, entries) of an events-shaped relation, keeping only the entries that the
    stored state of their session does not hold yet (sessions with none are left out). At
    ingest nearly every (session, entry) pair of a batch is already stored: it is looked up
    pair by pair, and arrays are built only for what is new, instead of building one array
    per session of the batch and comparing whole arrays."""
    return sql.SQL("""SELECT {k}, array_agg(e) AS entries FROM (
            SELECT DISTINCT {k}, {entry} AS e
            FROM {rel} WHERE NOT is_bot AND {k} IS NOT NULL) pairs
        WHERE NOT EXISTS (SELECT 1 FROM {state} cur
                          WHERE cur.{k} = pairs.{k} AND pairs.e = ANY (cur.entries))
        GROUP BY {k}""").format(entry=sql.SQL(entry_sql()), rel=sql.SQL(relation),
                                 state=sql.Identifier(subj.state_table), k=sql.SQL(subj.key))


def entries_from(relation: str, where: str = "TRUE", subj: Subject = SESSIONS) -> sql.Composable:
    """(session_id, entries) aggregated from an events-shaped relation (human events only)."""
    # Distinct pairs first, then one array per session: both steps can hash. (array_agg(DISTINCT)
    # sorts every session's rows, comparing text in the database collation.)
    return sql.SQL("""SELECT {k}, array_agg(e) AS entries FROM (
            SELECT DISTINCT {k}, {entry} AS e
            FROM {rel} WHERE NOT is_bot AND {k} IS NOT NULL AND ({where})) pairs
        GROUP BY {k}""").format(entry=sql.SQL(entry_sql()), rel=sql.SQL(relation),
                                 where=sql.SQL(where), k=sql.SQL(subj.key))
