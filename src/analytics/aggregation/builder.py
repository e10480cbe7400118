"""SQL for a planned StatsQuery. Raw events and rollups produce the same shapes, so everything
above the sources (merging metric kinds, zero-fill, ordering, JSON) is one code path.

Rows are placed in buckets with `width_bucket(t, edges)` (edges computed in Python, see
buckets.py); the final rows are rendered as JSON by PostgreSQL, so a 50,000-row answer never
becomes 50,000 Python dicts.
"""
from __future__ import annotations

from psycopg import postgres, sql
from psycopg.adapt import Dumper

from ..rollups.catalog import DIMENSIONS
from .buckets import labels_literal
from .planner import Piece, Plan, Source
from .query import StatsQuery

_ALL = sql.SQL


class TextArray(str):
    """A text[] written as its text literal, sent typed: psycopg's list dumper (a Python loop per
    element) was a sixth of a worker's CPU for a 288-bucket answer."""


class _TextArrayDumper(Dumper):
    oid = postgres.types["text"].array_oid

    def dump(self, obj: str) -> bytes:
        return obj.encode()


postgres.adapters.register_dumper(TextArray, _TextArrayDumper)


def _like_prefix(p: str) -> str:
    return p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Builder:
    def __init__(self, q: StatsQuery, groups: list[tuple] | None = None) -> None:
        """`groups`: restrict the answer to these group keys (a timeseries of the top groups)."""
        self.q = q
        self.groups = groups
        self._arrays: list[sql.Composable] | None = None
        self.params: dict[str, object] = {}
        self.g = [sql.Identifier(d) for d in q.group_by]          # output names
        self.bucketed = q.kind == "timeseries"
        if self.bucketed:
            # The bucket labels (ISO 8601 with the zone's offsets) are sent once; the edges are
            # the same literal cast once per statement (an InitPlan: text -> timestamptz is
            # only stable, so a bare cast would be re-evaluated per row).
            self.labels = self.param(TextArray(labels_literal(q.edges, q.tz)), "text[]")
            self.edges = _ALL("(SELECT {}::timestamptz[])").format(self.labels)

    # -- helpers --------------------------------------------------------------------------
    def param(self, value, cast: str | None = None) -> sql.Composable:
        name = f"p{len(self.params)}"
        self.params[name] = value
        ph = sql.Placeholder(name)
        return sql.SQL("{}::{}").format(ph, sql.SQL(cast)) if cast else ph

    def _gsel(self) -> sql.Composable:
        """', page, referrer_host AS referrer' for a source row."""
        return _ALL("").join(_ALL(", {} AS {}").format(sql.Identifier(DIMENSIONS[d]), sql.Identifier(d))
                             for d in self.q.group_by)

    def _gnames(self, prefix: str = "") -> sql.Composable:
        p = _ALL(prefix + ".") if prefix else _ALL("")
        return _ALL("").join(_ALL(", ") + p + g for g in self.g)

    def _gpos(self) -> sql.Composable:
        return _ALL("").join(_ALL(", {}").format(_ALL(str(i + 2))) for i in range(len(self.g)))

    def _bucket(self, t: str) -> sql.Composable:
        if self.bucketed:
            return _ALL("width_bucket({}, {})").format(sql.Identifier(t), self.edges)
        return _ALL("1")

    def _where(self, tcol: str, piece: Piece, *, bots_column: bool) -> sql.Composable:
        t = sql.Identifier(tcol)
        parts = [_ALL("{} >= {}").format(t, self.param(piece.lo, "timestamptz")),
                 _ALL("{} < {}").format(t, self.param(piece.hi, "timestamptz"))]
        for name, values in self.q.filters.values:
            if name == "page_prefix":
                parts.append(_ALL("page LIKE ANY({})").format(
                    self.param([_like_prefix(v) for v in values], "text[]")))
            else:
                parts.append(_ALL("{} = ANY({})").format(sql.Identifier(DIMENSIONS[name]),
                                                         self.param(list(values), "text[]")))
        if bots_column and not self.q.filters.include_bots:
            parts.append(_ALL("NOT is_bot"))
        if self.groups is not None:
            cols = _ALL(", ").join(sql.Identifier(DIMENSIONS[d]) for d in self.q.group_by)
            parts.append(_ALL("({}) IN (SELECT * FROM unnest({}))").format(cols, self._group_arrays()))
        return _ALL(" AND ").join(parts)

    # -- metric kinds ---------------------------------------------------------------------
    def _pieces(self, src: Source, raw_cols: str, rollup_cols: str, extra_group: str = "",
                raw_where: str = "") -> list[sql.Composable]:
        """Per piece: (b, groups, partial aggregates) from the raw events or a rollup table."""
        out = []
        for p in src.pieces:
            raw = p.table is None
            where = self._where("time" if raw else "bucket", p, bots_column=True)
            if raw and raw_where:
                where = where + _ALL(" AND " + raw_where)
            out.append(_ALL("SELECT {b} AS b{gsel}, {cols} FROM {t} WHERE {w} GROUP BY 1{gpos}{extra}").format(
                b=self._bucket("time" if raw else "bucket"), gsel=self._gsel(),
                cols=_ALL(raw_cols if raw else rollup_cols),
                t=sql.Identifier("events" if raw else p.table), w=where, gpos=self._gpos(),
                extra=_ALL(extra_group)))
        return out

    def agg(self, src: Source) -> sql.Composable:
        # avg: exact integer sums divided in float8, identical whichever source summed them.
        avg = "sum(dur_sum)::float8 / nullif(sum(dur_n), 0)"
        if len(src.pieces) == 1:  # one level: the piece's own GROUP BY gives the final numbers
            (p,) = self._pieces(src, "count(*) AS events, sum(duration)::float8 / nullif(count(duration), 0) "
                                     "AS avg_duration",
                                f"sum(events)::bigint AS events, {avg} AS avg_duration")
            return p
        pieces = self._pieces(src, "count(*) AS events, sum(duration) AS dur_sum, count(duration) AS dur_n",
                              "sum(events) AS events, sum(dur_sum) AS dur_sum, sum(dur_n) AS dur_n")
        return _ALL("SELECT b{g}, sum(events)::bigint AS events, {avg} AS avg_duration "
                    "FROM ({u}) u GROUP BY b{g}").format(g=self._gnames(), avg=_ALL(avg),
                                                          u=_ALL(" UNION ALL ").join(pieces))

    def dur(self, src: Source) -> sql.Composable:
        pieces = self._pieces(src, "duration AS d, count(*) AS n", "duration AS d, sum(n) AS n",
                              extra_group=", duration", raw_where="duration IS NOT NULL")
        g = self._gnames()
        # percentile_cont over a histogram: the values at 0-based ranks floor(f*(N-1)) and
        # ceil(f*(N-1)), interpolated as PostgreSQL does.
        pct = []
        for name, f in (("median_duration", "0.5"), ("p95_duration", "0.95")):
            pos = _ALL("({}::float8 * (max(total) - 1)::float8)").format(_ALL(f))
            row_pos = _ALL("({}::float8 * (total - 1)::float8)").format(_ALL(f))
            lo = _ALL("min(d) FILTER (WHERE before + n > floor({}))").format(row_pos)
            hi = _ALL("min(d) FILTER (WHERE before + n > ceil({}))").format(row_pos)
            pct.append(_ALL("({lo}::float8 + ({hi}::float8 - {lo}::float8) * ({pos} - floor({pos}))) AS {n}").format(
                lo=lo, hi=hi, pos=pos, n=sql.Identifier(name)))
        return _ALL("""SELECT b{g}, {pct} FROM (
                SELECT b{g}, d, n, sum(n) OVER w - n AS before, sum(n) OVER (PARTITION BY b{g}) AS total
                FROM (SELECT b{g}, d, sum(n) AS n FROM ({u}) u GROUP BY b{g}, d) h
                WINDOW w AS (PARTITION BY b{g} ORDER BY d ROWS UNBOUNDED PRECEDING)) c
            GROUP BY b{g}""").format(g=g, pct=_ALL(", ").join(pct), u=_ALL(" UNION ALL ").join(pieces))

    def ses(self, src: Source) -> sql.Composable:
        (p,) = src.pieces
        if p.table is None:
            return _ALL("""SELECT {b} AS b{gsel}, count(DISTINCT session_id) AS unique_sessions
                FROM events WHERE {w} GROUP BY 1{gpos}""").format(
                b=self._bucket("time"), gsel=self._gsel(), w=self._where("time", p, bots_column=True),
                gpos=self._gpos())
        start = self.param(self.q.start, "timestamptz")
        lower = _ALL("greatest(({})[b], {})").format(self.edges, start) if self.bucketed else start
        return _ALL("""SELECT b{g}, (sum(n) FILTER (WHERE prev < {lower}))::bigint AS unique_sessions
            FROM (SELECT {b} AS b{gsel}, prev, n FROM {t} WHERE {w}) s GROUP BY b{g}""").format(
            g=self._gnames(), lower=lower, b=self._bucket("bucket"), gsel=self._gsel(),
            t=sql.Identifier(p.table), w=self._where("bucket", p, bots_column=False))

    # -- whole statements -------------------------------------------------------------------
    def _merged(self, plan: Plan) -> sql.Composable:
        ctes = [_ALL("agg AS ({})").format(self.agg(plan.agg))]
        cols = [_ALL("agg.events"), _ALL("agg.avg_duration")]
        joins = []
        if plan.ses:
            ctes.append(_ALL("ses AS ({})").format(self.ses(plan.ses)))
            cols.append(_ALL("coalesce(ses.unique_sessions, 0) AS unique_sessions"))
            joins.append(_ALL("LEFT JOIN ses USING (b{})").format(self._gnames()))
        if plan.dur:
            ctes.append(_ALL("dur AS ({})").format(self.dur(plan.dur)))
            cols += [_ALL("dur.median_duration"), _ALL("dur.p95_duration")]
            joins.append(_ALL("LEFT JOIN dur USING (b{})").format(self._gnames()))
        ctes.append(_ALL("m AS (SELECT b{g}, {cols} FROM agg {joins})").format(
            g=self._gnames(), cols=_ALL(", ").join(cols), joins=_ALL(" ").join(joins)))
        return _ALL("WITH ") + _ALL(",\n").join(ctes)

    def _row_json(self, alias: str, *, bucket: bool, zero_fill: bool) -> sql.Composable:
        """One JSON object per row, concatenated (several times faster than json_build_object)."""
        items = []
        if bucket:
            items.append(_ALL("""'"bucket":"' || {}.label || '"'""").format(_ALL(alias)))
        for d in self.q.group_by:
            items.append(_ALL("{} || to_json({}.{})::text").format(
                sql.Literal(f'"{d}":'), _ALL(alias), sql.Identifier(d)))
        for m in self.q.metrics:
            col = _ALL("m.{}").format(sql.Identifier(m))
            if zero_fill and m in ("events", "unique_sessions"):
                col = _ALL("coalesce({}, 0)::text").format(col)
            else:
                col = _ALL("coalesce({}::text, 'null')").format(col)
            items.append(_ALL("{} || {}").format(sql.Literal(f'"{m}":'), col))
        return _ALL("""'{{' || {} || '}}'""").format(_ALL(" || ',' || ").join(items))

    def _gorder(self, alias: str) -> sql.Composable:
        """', a.page COLLATE "C", ...': byte order, the same on every database collation."""
        return _ALL("").join(_ALL(', {}.{} COLLATE "C"').format(_ALL(alias), g) for g in self.g)

    def _ranked(self) -> sql.Composable:
        q = self.q
        direction = _ALL("DESC" if q.descending else "ASC")
        order = _ALL("m.{} {} NULLS LAST").format(sql.Identifier(q.order_by), direction)
        return _ALL("row_number() OVER (ORDER BY {}{})").format(order, self._gorder("m"))

    def timeseries(self, plan: Plan) -> sql.Composable:
        """Zero-filled rows: every bucket, and for each group present (or the chosen groups) every bucket."""
        # Bucket b with its label, from the labels array: subscripting it per row instead walks
        # the array from its start each time (text elements have no fixed width).
        buckets = _ALL("""(SELECT b::int AS b, label FROM unnest({}) WITH ORDINALITY AS l(label, b)
            WHERE b <= {})""").format(self.labels, self.param(len(self.q.edges), "int"))
        if not self.g:
            grid = _ALL("SELECT b, label, 0 AS rank FROM {} bl").format(buckets)
        elif self.groups is None:
            grid = _ALL("""SELECT b, label{g}, gr.rank FROM {bl} bl CROSS JOIN (
                SELECT {gl}, row_number() OVER (ORDER BY {go}) AS rank FROM (SELECT DISTINCT {gl} FROM m) d) gr""").format(
                g=self._gnames("gr"), bl=buckets, gl=_ALL(", ").join(self.g),
                go=_ALL(", ").join(_ALL('d.{} COLLATE "C"').format(g) for g in self.g))
        else:
            grid = _ALL("""SELECT b, label{g}, gr.rank FROM {bl} bl
                CROSS JOIN unnest({arrays}) WITH ORDINALITY AS gr({gl}, rank)""").format(
                g=self._gnames("gr"), bl=buckets, arrays=self._group_arrays(), gl=_ALL(", ").join(self.g))
        return _ALL("""{merged},
            grid AS ({grid})
            SELECT coalesce('[' || string_agg({row}, ',' ORDER BY grid.b, grid.rank) || ']', '[]'), count(*)
            FROM grid LEFT JOIN m USING (b{g})""").format(
            merged=self._merged(plan), grid=grid, row=self._row_json("grid", bucket=True, zero_fill=True),
            g=self._gnames())

    def grouped(self, plan: Plan) -> sql.Composable:
        """One row per group, ordered by order_by, paged by limit/offset; plus the group count."""
        q = self.q
        lo = self.param(q.offset, "bigint")
        hi = self.param(None if q.limit is None else q.offset + q.limit, "bigint")
        return _ALL("""{merged}
            SELECT coalesce((SELECT '[' || string_agg(o, ',' ORDER BY rn) || ']' FROM (
                        SELECT {row} AS o, {rank} AS rn FROM m) x
                    WHERE rn > {lo} AND ({hi} IS NULL OR rn <= {hi})), '[]'),
                   (SELECT count(*) FROM m)""").format(
            merged=self._merged(plan), row=self._row_json("m", bucket=False, zero_fill=False),
            rank=self._ranked(), lo=lo, hi=hi)

    def single(self, plan: Plan) -> sql.Composable:
        """Totals without groups: exactly one row, zeros when nothing matched."""
        return _ALL("""{merged}
            SELECT '[' || {row} || ']', 1 FROM (SELECT 1) one LEFT JOIN m ON true""").format(
            merged=self._merged(plan), row=self._row_json("m", bucket=False, zero_fill=True))

    def _group_arrays(self) -> sql.Composable:
        if self._arrays is None:
            self._arrays = [self.param([k[i] for k in self.groups], "text[]") for i in range(len(self.g))]
        return _ALL(", ").join(self._arrays)

    def statement(self, plan: Plan) -> sql.Composable:
        if self.q.kind == "timeseries":
            return self.timeseries(plan)
        if self.g:
            return self.grouped(plan)
        return self.single(plan)
