"""`python -m bench [ingest|query|export|ua|fastpath|keys|metrics|before_after|...]`: run one benchmark, or
all of them in turn.

All of them (`make bench`): ingestion on an empty schema, the query benchmark (which loads its
10M-event database and keeps it for the next step), ingestion again on that database ("with
history"), the export benchmark on that database, then the database is dropped (unless --keep
is given); then the user-agent, fast-path, key-check and metrics benchmarks, and this version
against the one before issue 10 (before_after).
"""
from __future__ import annotations

import importlib
import os
import sys

SUITES = ("ingest", "query", "export", "ua", "fastpath", "keys", "metrics", "ratelimit", "visitors", "visits",
          "retention", "import", "before_after")


def _all(rest: list[str]) -> int:
    from bench import before_after, export, fastpath, ingest, keys, metrics, query, ua

    keep = "--keep" in rest
    rest = [a for a in rest if a != "--keep"]
    db = "analytics_bench_query"
    rc = int(ingest.main(rest) or 0)
    env = dict(os.environ)  # the query benchmark points DATABASE_URL at its own database
    try:
        rc |= int(query.main(["--keep", "--db", db]) or 0)
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
