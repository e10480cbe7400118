"""`python -m bench [ingest|query|export|ua|fastpath|keys|metrics|before_after|geo|...]`: run one benchmark, or
all of them in turn.

All of them (`make bench`): ingestion on an empty schema, the query benchmark (which loads its
10M-event database and keeps it for the next steps), the dashboard's load time in a browser on
that database, ingestion again on that database ("with
history"), the export benchmark on that database, then the database is dropped (unless --keep
is given); then the user-agent, fast-path, key-check and metrics benchmarks, this version
against the one before issue 10 and against itself without issue 10 (before_after), and the dashboard latency curve against event
count (`curve`: 1M, 10M and 30M events, each database kept for the next run; `--curve-sizes
1M,10M` to skip 30M, whose first load takes the better part of an hour).
"""
from __future__ import annotations

import importlib
import os
import sys

SUITES = ("ingest", "query", "dashboard", "export", "ua", "fastpath", "keys", "metrics", "ratelimit",
          "visitors", "visits", "retention", "import", "before_after", "curve", "geo", "deferred",
          "protocol")


def _all(rest: list[str]) -> int:
    from bench import before_after, curve, dashboard, export, fastpath, ingest, keys, metrics, query, ua

    keep = "--keep" in rest
    rest = [a for a in rest if a != "--keep"]
    sizes = "1M,10M,30M"
    if "--curve-sizes" in rest:
        i = rest.index("--curve-sizes")
        sizes = rest[i + 1]
        del rest[i:i + 2]
    db = "analytics_bench_query"
    rc = int(ingest.main(rest) or 0)
    env = dict(os.environ)  # the query benchmark points DATABASE_URL at its own database
    try:
        rc |= int(query.main(["--keep", "--db", db]) or 0)
        rc |= int(dashboard.main(["--reuse", "--keep", "--db", db]) or 0)  # load time in a browser
        rc |= int(ingest.main([*rest, "--history", "--db", db]) or 0)
        rc |= int(export.main(["--reuse", "--db", db]) or 0)  # rows/s and worker RSS on that database
    finally:
        if not keep:
            query._drop_database(db)
        os.environ.clear()
        os.environ.update(env)
    rc |= int(ua.main([]) or 0)
    rc |= int(fastpath.main([]) or 0)
    rc |= int(keys.main([]) or 0)
    rc |= int(metrics.main([]) or 0)
    rc |= int(before_after.main([]) or 0)  # issue 10: within 10% of the version before it
    rc |= int(before_after.main(["--issue-10-off"]) or 0)  # issue 10's own cost, in this tree
    rc |= int(curve.main(["--keep", "--sizes", sizes]) or 0)  # issue 12: latency against event count
    return rc


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")][:1]
    rest = [a for a in argv if a not in names]
    if not names:
        return _all(rest)
    name = names[0]
    if name not in SUITES:
        print(f"unknown benchmark {name!r}; choose from {', '.join(SUITES)}", file=sys.stderr)
        return 2
    module = "importer" if name == "import" else name  # `import` is a keyword
    return int(importlib.import_module(f"bench.{module}").main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
