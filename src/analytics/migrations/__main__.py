"""`python -m analytics.migrations COMMAND` (or `make migrate`, which runs `upgrade`).

  upgrade [REV]       migrate DB_SCHEMA of DATABASE_URL to REV (default: head), as startup does
  current             the revision(s) the schema is at
  history             every revision, newest first
  heads               the head revision(s) of this code
  stamp REV           record REV as applied without running anything (repairs only)
  revision -m MSG     a new, empty revision file after the head, numbered after the head (0014, ...)
  ddl                 the DDL this code's helpers render, for writing a revision by hand
"""
from __future__ import annotations

import argparse
import logging
import re
import sys

from pathlib import Path

from . import BASELINE, VERSIONS_DIR, connection, current_revisions, locked_connection, make_config, \
    script_directory, upgrade


def _next_rev_id(extra: list[str]) -> str:
    numbers = [int(r.revision) for r in script_directory(extra).walk_revisions()
               if re.fullmatch(r"\d+", r.revision)]
    return f"{max(numbers, default=0) + 1:04d}"


def main(argv: list[str]) -> int:
    from alembic import command

    from ..config import get_settings

    ap = argparse.ArgumentParser(prog="python -m analytics.migrations",
                                 description="Schema migrations of DB_SCHEMA in DATABASE_URL.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upgrade", help="migrate to a revision (default: head)")
    up.add_argument("target", nargs="?", default="head")
    sub.add_parser("current", help="the revision(s) the schema is at")
    sub.add_parser("history", help="every revision, newest first")
    sub.add_parser("heads", help="the head revision(s) of this code")
    st = sub.add_parser("stamp", help="record a revision as applied without running it")
    st.add_argument("target")
    rv = sub.add_parser("revision", help="create a new revision file after the head")
    rv.add_argument("-m", "--message", required=True)
    rv.add_argument("--rev-id", help="default: the next number (0002, 0003, ...)")
    rv.add_argument("--version-path", default=str(VERSIONS_DIR), help=argparse.SUPPRESS)
    sub.add_parser("ddl", help="print the DDL the code's helpers render for DB_SCHEMA")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()

    if args.cmd == "upgrade":
        before, after = upgrade(settings, args.target)
        print(f"schema {settings.db_schema}: {','.join(before) or '(empty)'} -> {','.join(after)}")
    elif args.cmd == "current":
        with connection(settings) as conn:
            print(",".join(current_revisions(conn, settings.db_schema)) or "(none)")
    elif args.cmd == "history":
        for rev in script_directory().walk_revisions():
            print(f"{rev.down_revision or '<base>'} -> {rev.revision}{' (head)' if rev.is_head else ''}"
                  f"{' (baseline)' if rev.revision == BASELINE else ''}, {rev.doc}")
    elif args.cmd == "heads":
        print("\n".join(script_directory().get_heads()))
    elif args.cmd == "stamp":
        cfg = make_config(settings)
        with locked_connection(settings) as conn:
            cfg.attributes["connection"] = conn
            command.stamp(cfg, args.target)
    elif args.cmd == "revision":
        path = Path(args.version_path).resolve()
        extra = [] if path == VERSIONS_DIR else [str(path)]  # a test's own directory
        script = command.revision(make_config(settings, extra), message=args.message,
                                  rev_id=args.rev_id or _next_rev_id(extra), version_path=str(path))
        print(f"created {script.path}")
    elif args.cmd == "ddl":
        import psycopg

        from ..schema import current_ddl
        with psycopg.connect(str(settings.database_url)) as conn:
            for stmt in current_ddl(settings.db_schema, settings.events_chunk_interval):
                print(stmt.as_string(conn).strip() + ";\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
