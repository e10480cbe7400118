"""The catalog (src/analytics/catalog.py) is the only listing of dimensions and metrics.

Two ways to break that, one test each:
- a new catalog entry does not reach a listing (the query model, the parameters and their
  OpenAPI types, the response row, the planner, the SQL builder): a throwaway dimension and a
  throwaway metric over the existing rollups are added to the catalog before anything else is
  imported, and must show up everywhere with no other change;
- someone writes a second hand-made list again: the source is scanned for literals and
  signatures naming two or more dimensions or metrics outside the catalog.
No server or database needed: both are about how the code is put together.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Run in a fresh interpreter: the extended catalog must be in place before the modules that
# derive from it are imported (as it would be after an edit of catalog.py).
_THROWAWAY = r'''
import json
import analytics.catalog as c

c.DIMENSIONS += (c.Dimension("agent", "user_agent", "the User-Agent header as sent",
                             "User-Agent; repeatable (OR)", prefix_filter="User-Agent prefix"),
                 c.Dimension("tier", "tier", "a closed set", "Tier", values=("Gold", "Free")))
c.METRICS += (c.Metric("total_duration", "agg", "coalesce(sum(duration), 0)",
                       merged="sum(dur_sum)::bigint", zero=0),)

from analytics.main import create_app
from analytics.aggregation import query, planner, router
from analytics.aggregation.builder import Builder
from analytics.rollups.ddl import all_tables

spec = create_app().openapi()
params = {p["name"]: p for p in spec["paths"]["/api/v1/stats/breakdown"]["get"]["parameters"]}
row = spec["components"]["schemas"]["StatsRow"]["properties"]

def enum(p):
    s = p["schema"]
    s = s.get("items", s)
    # group_by: a dimension (the enum) or prop:<key> (a pattern)
    return next((a["enum"] for a in s.get("anyOf", [s]) if "enum" in a), None)

def sql(**kw):
    q = query.build_query(kw.pop("kind", "breakdown"), interval=None, start="2026-01-01", end="2026-01-03",
                          timezone_name="UTC", include_bots=False, order_by=None, limit=None, offset=0,
                          compare=None, source="auto", max_buckets=1000, **kw)
    ready = planner.ReadyTables(all_tables())
    p = planner.plan(q, ready)
    return Builder(q).statement(p), {m: getattr(p, planner.KIND_OF_METRIC[m]).label for m in q.metrics}

raw_sql, raw_src = sql(group_by=["agent"], metrics=["total_duration", "events"],
                       filters={"agent_prefix": ["Mozilla"], "tier": ["gold"]})
roll_sql, roll_src = sql(group_by=["page"], metrics=["total_duration"], filters={})
print(json.dumps({
    "dimensions": list(query.DIMENSIONS), "filters": list(query.FILTERS),
    "group_by": enum(params["group_by"]), "metrics": enum(params["metrics"]),
    "order_by": json.dumps(params["order_by"]["schema"]),
    "agent": "agent" in params, "agent_prefix": "agent_prefix" in params, "tier": enum(params["tier"]),
    "row": sorted(row), "kind": planner.KIND_OF_METRIC.get("total_duration"),
    "raw_sql": raw_sql, "raw_src": raw_src, "roll_sql": roll_sql, "roll_src": roll_src,
    "model": sorted(router.DECLARATIONS["totals"].model.model_fields),
}))
'''


def test_a_new_catalog_entry_reaches_every_listing():
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", _THROWAWAY], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the query model and the parameters (names, OpenAPI types)
    assert {"agent", "tier"} <= set(got["dimensions"])
    assert {"agent", "agent_prefix", "tier"} <= set(got["filters"])
    assert {"agent", "tier"} <= set(got["group_by"])
    assert "total_duration" in got["metrics"] and "total_duration" in got["order_by"]
    assert got["agent"] and got["agent_prefix"] and got["tier"] == ["Gold", "Free"]
    assert {"agent", "agent_prefix", "tier", "total_duration"} & set(got["model"]) == {"agent", "agent_prefix", "tier"}
    # the response row
    assert {"agent", "tier", "total_duration"} <= set(got["row"])
    # the planner: an agg metric; no rollup carries `agent`, so raw events; by page, a rollup
    assert got["kind"] == "agg"
    assert got["raw_src"] == {"total_duration": "raw", "events": "raw"}
    assert got["roll_src"]["total_duration"].startswith("rollup_agg_page_")
    # the builder: the dimension's column, its prefix filter, the canonical enum value, the metric's SQL
    raw = got["raw_sql"]
    assert '"user_agent" AS "agent"' in raw and '"user_agent" LIKE ANY' in raw and '"tier" = ANY' in raw
    assert 'coalesce(sum(duration), 0) AS "total_duration"' in raw
    assert 'sum(dur_sum)::bigint AS "total_duration"' in got["roll_sql"]


# -- no second list ----------------------------------------------------------------------------
# Lists that name dimensions or metrics but are not the read API's: each with why.
# The write side (ingestion/, models.py) is the dimensions' ingest derivation: not scanned.
_WRITE_SIDE = ("analytics/ingestion/", "analytics/models.py")
_ALLOWED = {
    # which rollup families carry which dimensions: the catalog's other half (rollups/catalog.py)
    ("analytics/rollups/catalog.py", "FAMILIES"),
    # seed 004's endpoint reads by page and os: a frozen API, not the catalog's
    ("analytics/aggregation/planner.py", "seed_table"),
    # the export format's fields: events columns as stored, not the stats API's dimensions
    ("analytics/export/statement.py", "FIELDS"),
    # seed 004's API: frozen fields of an older endpoint (must not grow with the catalog)
    ("analytics/aggregation/seed_api.py", "*"),
    ("analytics/aggregation/seed_reader.py", "*"),
    # a frozen revision: the tables as they were rendered then, which must not follow later edits
    ("analytics/migrations/versions/0008_event_field_rollups.py", "*"),
    # the importer maps other products' export columns onto events columns
    ("analytics/importer/mapping.py", "*"),
    ("analytics/importer/formats.py", "*"),
}


def _names():
    sys.path.insert(0, str(SRC))
    try:
        from analytics import catalog
    finally:
        sys.path.remove(str(SRC))
    return set(catalog.dimension_names()) | set(catalog.filter_names()), set(catalog.metric_names())


def second_lists(root: Path) -> list[str]:
    """Places outside the catalog that list two or more dimensions, or two or more metrics."""
    dims, mets = _names()
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "analytics/catalog.py" or rel.startswith(_WRITE_SIDE) or (rel, "*") in _ALLOWED:
            continue
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            elif isinstance(node, ast.Dict):
                names = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
            elif isinstance(node, ast.ClassDef):
                names = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
            hits = [n for n in names if n in dims], [n for n in names if n in mets]
            if any(len(set(h)) >= 2 for h in hits):
                owner = _owner(tree, node)
                if (rel, owner) not in _ALLOWED:
                    found.append(f"{rel}:{node.lineno} ({owner}): {sorted(set(hits[0] + hits[1]))}")
    return found


def _owner(tree: ast.AST, node: ast.AST) -> str:
    """The module-level name a node belongs to (for the allow list)."""
    for top in tree.body:
        if any(n is node for n in ast.walk(top)):
            if isinstance(top, (ast.Assign, ast.AnnAssign)):
                t = top.targets[0] if isinstance(top, ast.Assign) else top.target
                return getattr(t, "id", "?")
            return getattr(top, "name", "?")
    return "?"


def test_no_second_list_of_dimensions_or_metrics():
    found = second_lists(SRC)
    assert not found, ("dimensions and metrics are declared once, in analytics/catalog.py; derive "
                       "from it instead of listing them here:\n" + "\n".join(found))


def test_first_seen_metrics_count_what_their_rollups_key():
    """A ses/vis metric's raw SQL counts the same key its first-seen tables are kept by, or the
    rollup path and the raw path of one question would count different things."""
    sys.path.insert(0, str(SRC))
    try:
        from analytics import catalog
        from analytics.rollups.sessions import SUBJECTS
    finally:
        sys.path.remove(str(SRC))
    for subj in SUBJECTS:
        (m,) = catalog.metrics_of(subj.kind)
        assert m.key == subj.key and m.raw == f"count(DISTINCT {subj.key})", m
