"""SQL for a planned StatsQuery. Raw events and rollups produce the same shapes, so everything
above the sources (merging metric kinds, zero-fill, ordering, JSON) is one code path.

Rows are placed in buckets with `width_bucket(t, edges)` (edges computed in Python, see
buckets.py); the final rows are rendered as JSON by PostgreSQL, so a 50,000-row answer never
becomes 50,000 Python dicts.

Statements are plain strings: every value is a named placeholder, and every name written into
the text is one of ours (dimensions, metrics, rollup tables), checked and quoted by `ident`/`json_key`.
Composing them with psycopg.sql and rendering that to bytes took a quarter of a millisecond
per answer; a string of the same shape is also converted by psycopg once (its cache of
converted statements is keyed by the text).
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from functools import lru_cache

from psycopg import postgres
from psycopg.adapt import Dumper

from .. import catalog
from .buckets import labels_literal
from ..rollups.visits import TABLE as VISITS_TABLE
from .planner import Piece, Plan, Source
from .query import StatsQuery


class TextArray(str):
    """A text[] written as its text literal, sent typed: psycopg's list dumper (a Python loop per
    element) was a sixth of a worker's CPU for a 288-bucket answer."""


class _TextArrayDumper(Dumper):
    oid = postgres.types["text"].array_oid

    def dump(self, obj: str) -> bytes:
        return obj.encode()


postgres.adapters.register_dumper(TextArray, _TextArrayDumper)

_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")


@lru_cache(maxsize=256)
def ident(name: str) -> str:
    """A quoted name. Only lower-case words are ever written into a statement: anything else
    means a caller let a request's text through unchecked."""
    if not _NAME.match(name):
        raise ValueError(f"not a name the statements use: {name!r}")
    return f'"{name}"'


@lru_cache(maxsize=64)
def json_key(name: str) -> str:
    """The SQL string constant '"name":' (a JSON object's key), for a name `ident` accepts."""
    ident(name)
    return f"""'"{name}":'"""


_FAR = datetime(9999, 12, 31, tzinfo=timezone.utc)


def _like_prefix(p: str) -> str:
    return p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Builder:
    def __init__(self, q: StatsQuery, groups: list[tuple] | None = None) -> None:
        """`groups`: restrict the answer to these group keys (a timeseries of the top groups)."""
        self.q = q
        self.groups = groups
        self._arrays: list[str] | None = None
        self.params: dict[str, object] = {}
        self.g = [self._alias(d) for d in q.group_by]    # output names
        self.bucketed = q.kind == "timeseries"
        if self.bucketed:
            # The bucket labels (ISO 8601 with the zone's offsets) are sent once; the edges are
            # the same literal cast once per statement (an InitPlan: text -> timestamptz is
            # only stable, so a bare cast would be re-evaluated per row).
            self.labels = self.param(TextArray(labels_literal(q.edges, q.tz)), "text[]")
            self.edges = f"(SELECT {self.labels}::timestamptz[])"

    # -- helpers --------------------------------------------------------------------------
    def param(self, value, cast: str | None = None) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s::{cast}" if cast else f"%({name})s"

    def _alias(self, d: str) -> str:
        """The output column of group_by dimension `d`: its name, or for prop:<key> (any text)
        a name of ours."""
        return f'"prop_{self.q.group_by.index(d)}"' if catalog.is_prop(d) else ident(d)

    def _col(self, d: catalog.Dimension) -> str:
        """The SQL reading dimension `d` from a source row: its column, or for prop:<key> the
        property's value as text ('' when the event has none), the key sent as a parameter."""
        if catalog.is_prop(d.name):
            key = d.name[len(catalog.PROP_PREFIX):]
            return f"coalesce(props ->> {self.param(key, 'text')}, '')"
        return ident(d.column)

    def _key(self, d: str) -> str:
        """The JSON key of an output column (a parameter for prop:<key>: any text)."""
        return self.param(json.dumps(d) + ":", "text") if catalog.is_prop(d) else json_key(d)

    def _gsel(self) -> str:
        """', page, referrer_host AS referrer' for a source row."""
        return "".join(f", {self._col(catalog.dimension(d))} AS {self._alias(d)}" for d in self.q.group_by)

    def _gnames(self, prefix: str = "") -> str:
        p = prefix + "." if prefix else ""
        return "".join(", " + p + g for g in self.g)

    def _gpos(self) -> str:
        return "".join(f", {i + 2}" for i in range(len(self.g)))

    def _bucket(self, t: str) -> str:
        if self.bucketed:
            return f"width_bucket({ident(t)}, {self.edges})"
        return "1"

    def _where(self, tcol: str, piece: Piece, *, bots_column: bool, filters=None, groups: bool = True) -> str:
        """`filters`: (name, values) pairs, by default all of the question's."""
        t = ident(tcol)
        parts = [f"{t} >= {self.param(piece.lo, 'timestamptz')}",
                 f"{t} < {self.param(piece.hi, 'timestamptz')}"]
        for name, values in self.q.filters.values if filters is None else filters:
            dim = catalog.filter_dimension(name)
            col = self._col(dim)
            if name != dim.name:  # the dimension's prefix filter
                parts.append(f"{col} LIKE ANY({self.param([_like_prefix(v) for v in values], 'text[]')})")
            else:
                parts.append(f"{col} = ANY({self.param(list(values), 'text[]')})")
        if bots_column and not self.q.filters.include_bots:
            parts.append("NOT is_bot")
        if groups and self.groups is not None:
            cols = ", ".join(self._col(catalog.dimension(d)) for d in self.q.group_by)
            parts.append(f"({cols}) IN (SELECT * FROM unnest({self._group_arrays()}))")
        return " AND ".join(parts)

    # -- metric kinds ---------------------------------------------------------------------
    def _pieces(self, src: Source, raw_cols: str, rollup_cols: str, extra_group: str = "",
                raw_where: str = "") -> list[str]:
        """Per piece: (b, groups, partial aggregates) from the raw events or a rollup table."""
        out = []
        for p in src.pieces:
            raw = p.table is None
            where = self._where("time" if raw else "bucket", p, bots_column=True)
            if raw and raw_where:
                where += " AND " + raw_where
            out.append(f"SELECT {self._bucket('time' if raw else 'bucket')} AS b{self._gsel()}, "
                       f"{raw_cols if raw else rollup_cols} FROM {ident('events' if raw else p.table)} "
                       f"WHERE {where} GROUP BY 1{self._gpos()}{extra_group}")
        return out

    def agg(self, src: Source) -> str:
        """Every agg metric of the catalog: over one piece directly (its own GROUP BY gives the
        final numbers), else the pieces' partial columns merged."""
        mets = catalog.metrics_of("agg")
        final = ", ".join(f"{m.merged} AS {ident(m.name)}" for m in mets)
        if len(src.pieces) == 1:
            (p,) = self._pieces(src, ", ".join(f"{m.raw} AS {ident(m.name)}" for m in mets), final)
            return p
        pieces = self._pieces(src, ", ".join(f"{c.raw} AS {ident(c.name)}" for c in catalog.AGG_PARTIALS),
                              ", ".join(f"{c.merge} AS {ident(c.name)}" for c in catalog.AGG_PARTIALS))
        g = self._gnames()
        return f"SELECT b{g}, {final} FROM ({' UNION ALL '.join(pieces)}) u GROUP BY b{g}"

    def dur(self, src: Source) -> str:
        pieces = self._pieces(src, "duration AS d, count(*) AS n", "duration AS d, sum(n) AS n",
                              extra_group=", duration", raw_where="duration IS NOT NULL")
        g = self._gnames()
        # percentile_cont over a histogram: the values at 0-based ranks floor(f*(N-1)) and
        # ceil(f*(N-1)), interpolated as PostgreSQL does.
        pct = []
        for name, f in ((m.name, m.fraction) for m in catalog.metrics_of("dur")):
            pos = f"({f}::float8 * (max(total) - 1)::float8)"
            row_pos = f"({f}::float8 * (total - 1)::float8)"
            lo = f"min(d) FILTER (WHERE before + n > floor({row_pos}))"
            hi = f"min(d) FILTER (WHERE before + n > ceil({row_pos}))"
            pct.append(f"({lo}::float8 + ({hi}::float8 - {lo}::float8) * ({pos} - floor({pos}))) AS {ident(name)}")
        return f"""SELECT b{g}, {", ".join(pct)} FROM (
                SELECT b{g}, d, n, sum(n) OVER w - n AS before, sum(n) OVER (PARTITION BY b{g}) AS total
                FROM (SELECT b{g}, d, sum(n) AS n FROM ({" UNION ALL ".join(pieces)}) u GROUP BY b{g}, d) h
                WINDOW w AS (PARTITION BY b{g} ORDER BY d ROWS UNBOUNDED PRECEDING)) c
            GROUP BY b{g}"""

    def ses(self, src: Source) -> str:
        """Distinct sessions (kind ses) or visitors (vis): the metric of the source's kind."""
        (m,) = catalog.metrics_of(src.kind)
        metric = ident(m.name)
        (p,) = src.pieces
        if p.table is None:
            return f"""SELECT {self._bucket("time")} AS b{self._gsel()}, {m.raw} AS {metric}
                FROM events WHERE {self._where("time", p, bots_column=True)} GROUP BY 1{self._gpos()}"""
        start = self.param(self.q.start, "timestamptz")
        lower = f"greatest(({self.edges})[b], {start})" if self.bucketed else start
        g = self._gnames()
        return f"""SELECT b{g}, (sum(n) FILTER (WHERE prev < {lower}))::bigint AS {metric}
            FROM (SELECT {self._bucket("bucket")} AS b{self._gsel()}, prev, n FROM {ident(p.table)}
                  WHERE {self._where("bucket", p, bots_column=False)}) s GROUP BY b{g}"""

    def visit(self, src: Source) -> str:
        """Visit metrics over the `visits` table: each visit in the bucket where it started.
        Filters on what a visit row carries read it; with others (a raw piece in the plan) only
        the visits that include a matching event count."""
        p = next(pc for pc in src.pieces if pc.table is not None)
        if p.table != VISITS_TABLE:
            return self._visit_rollup(p)
        own = [(f, v) for f, v in self.q.filters.values if catalog.visit_column_filter(f)]
        where = self._where("started", p, bots_column=False, filters=own)
        if any(pc.table is None for pc in src.pieces):
            where += f" AND (visitor_id, started) IN ({self._visits_with_event(p)})"
        mets = ", ".join(f"{m.raw} AS {ident(m.name)}" for m in catalog.metrics_of("visit"))
        return f"""SELECT {self._bucket("started")} AS b{self._gsel()}, {mets}
            FROM {ident(p.table)} WHERE {where} GROUP BY 1{self._gpos()}"""

    def _visit_rollup(self, p: Piece) -> str:
        """Visit metrics from a visit rollup (the planner chose one: no filters, no metric it lacks).
        Every visit metric column is there for the merge; those a rollup cannot give are null."""
        mets = ", ".join(f"{m.rollup or 'NULL::float8'} AS {ident(m.name)}"
                         for m in catalog.metrics_of("visit"))
        where = self._where("bucket", p, bots_column=False, filters=())
        return f"""SELECT {self._bucket("bucket")} AS b{self._gsel()}, {mets}
            FROM {ident(p.table)} WHERE {where} AND visits <> 0 GROUP BY 1{self._gpos()}"""

    def _visits_with_event(self, p: Piece) -> str:
        """(visitor_id, started) of the visits starting in [p.lo, p.hi) that include a human event
        matching the question's event filters. Such an event is at or after its visit's start and
        at or before the latest end of those visits: that bounds the scan of raw events."""
        ev = [(f, v) for f, v in self.q.filters.values if not catalog.visit_column_filter(f)]
        lo, hi = self.param(p.lo, "timestamptz"), self.param(p.hi, "timestamptz")
        last = f"(SELECT max(ended) FROM {ident(p.table)} WHERE started >= {lo} AND started < {hi})"
        span = Piece(None, p.lo, _FAR)  # the upper bound is `last`
        match = self._where("time", span, bots_column=False, filters=ev, groups=False)
        return f"""SELECT v.visitor_id, v.started
            FROM (SELECT visitor_id, time FROM {ident("events")}
                  WHERE {match} AND time <= {last} AND NOT is_bot AND visitor_id IS NOT NULL) e
            JOIN {ident(p.table)} v ON v.visitor_id = e.visitor_id AND e.time >= v.started AND e.time <= v.ended
            WHERE v.started >= {lo} AND v.started < {hi}"""

    # -- whole statements -------------------------------------------------------------------
    def _merged(self, plan: Plan) -> str:
        g = self._gnames()
        ctes, cols, joins = [], [], []
        sources = plan.sources()
        driver = next(iter(sources))  # agg when asked: every row of m is one of its rows
        for kind, src in sources.items():
            ctes.append(f"{kind} AS ({getattr(self, 'ses' if kind == 'vis' else kind)(src)})")
            for m in catalog.metrics_of(kind):
                col = f"{kind}.{ident(m.name)}"
                # a group the driver has but this kind has not: the metric's zero (null when none)
                cols.append(f"coalesce({col}, {m.zero}) AS {ident(m.name)}"
                            if kind != driver and m.zero_filled else col)
            if kind != driver:
                joins.append(f"LEFT JOIN {kind} USING (b{g})")
        ctes.append(f"m AS (SELECT b{g}, {', '.join(cols)} FROM {driver} {' '.join(joins)})")
        return "WITH " + ",\n".join(ctes)

    def _row_json(self, alias: str, *, bucket: bool, zero_fill: bool) -> str:
        """One JSON object per row, concatenated (several times faster than json_build_object)."""
        items = []
        if bucket:
            items.append(f"""'"bucket":"' || {alias}.label || '"'""")
        for d in self.q.group_by:
            items.append(f"{self._key(d)} || to_json({alias}.{self._alias(d)})::text")
        for m in self.q.metrics:
            col = f"m.{ident(m)}"
            if zero_fill and catalog.metric(m).zero_filled:
                col = f"coalesce({col}, 0)::text"
            else:
                col = f"coalesce({col}::text, 'null')"
            items.append(f"{json_key(m)} || {col}")
        return "'{' || " + " || ',' || ".join(items) + " || '}'"

    def _gorder(self, alias: str) -> str:
        """', a.page COLLATE "C", ...': byte order, the same on every database collation."""
        return "".join(f', {alias}.{g} COLLATE "C"' for g in self.g)

    def _ranked(self) -> str:
        q = self.q
        direction = "DESC" if q.descending else "ASC"
        return f"row_number() OVER (ORDER BY m.{ident(q.order_by)} {direction} NULLS LAST{self._gorder('m')})"

    def timeseries(self, plan: Plan) -> str:
        """Zero-filled rows: every bucket, and for each group present (or the chosen groups) every bucket."""
        # Bucket b with its label, from the labels array: subscripting it per row instead walks
        # the array from its start each time (text elements have no fixed width).
        buckets = f"(SELECT b::int AS b, label FROM unnest({self.labels}) WITH ORDINALITY AS l(label, b))"
        gr, gl = self._gnames("gr"), ", ".join(self.g)
        if not self.g:
            grid = f"SELECT b, label, 0 AS rank FROM {buckets} bl"
        elif self.groups is None:
            go = ", ".join(f'd.{g} COLLATE "C"' for g in self.g)
            grid = f"""SELECT b, label{gr}, gr.rank FROM {buckets} bl CROSS JOIN (
                SELECT {gl}, row_number() OVER (ORDER BY {go}) AS rank FROM (SELECT DISTINCT {gl} FROM m) d) gr"""
        else:
            grid = f"""SELECT b, label{gr}, gr.rank FROM {buckets} bl
                CROSS JOIN unnest({self._group_arrays()}) WITH ORDINALITY AS gr({gl}, rank)"""
        return f"""{self._merged(plan)},
            grid AS ({grid})
            SELECT coalesce('[' || string_agg({self._row_json("grid", bucket=True, zero_fill=True)}, ','
                                              ORDER BY grid.b, grid.rank) || ']', '[]'), count(*)
            FROM grid LEFT JOIN m USING (b{self._gnames()})"""

    def grouped(self, plan: Plan) -> str:
        """One row per group, ordered by order_by, paged by limit/offset; plus the group count."""
        q = self.q
        lo = self.param(q.offset, "bigint")
        hi = self.param(None if q.limit is None else q.offset + q.limit, "bigint")
        return f"""{self._merged(plan)}
            SELECT coalesce((SELECT '[' || string_agg(o, ',' ORDER BY rn) || ']' FROM (
                        SELECT {self._row_json("m", bucket=False, zero_fill=False)} AS o, {self._ranked()} AS rn
                        FROM m) x
                    WHERE rn > {lo} AND ({hi} IS NULL OR rn <= {hi})), '[]'),
                   (SELECT count(*) FROM m)"""

    def single(self, plan: Plan) -> str:
        """Totals without groups: exactly one row, zeros when nothing matched."""
        return f"""{self._merged(plan)}
            SELECT '[' || {self._row_json("m", bucket=False, zero_fill=True)} || ']', 1
            FROM (SELECT 1) one LEFT JOIN m ON true"""

    def _group_arrays(self) -> str:
        if self._arrays is None:
            self._arrays = [self.param([k[i] for k in self.groups], "text[]") for i in range(len(self.g))]
        return ", ".join(self._arrays)

    def statement(self, plan: Plan) -> str:
        if self.q.kind == "timeseries":
            return self.timeseries(plan)
        if self.g:
            return self.grouped(plan)
        return self.single(plan)
