"""`python -m bench [ingest|query|ua ...]`: run one benchmark, or all of them in turn."""
from __future__ import annotations

import importlib
import sys

SUITES = ("ingest", "query", "ua", "fastpath")


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")][:1] or list(SUITES)
    rest = [a for a in argv if a not in names]
    rc = 0
    for name in names:
        if name not in SUITES:
            print(f"unknown benchmark {name!r}; choose from {', '.join(SUITES)}", file=sys.stderr)
            return 2
        mod = importlib.import_module(f"bench.{name}")
        rc |= int(mod.main(rest) or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
