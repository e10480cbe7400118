"""`python -m analytics COMMAND ...`: the operator's commands, one module each.

  keys      create, list, share and revoke API keys (analytics.auth.cli)
  privacy   scrub stored IP addresses, replace today's visitor salt (analytics.privacy.cli)
  migrate   schema migrations (also: python -m analytics.migrations)
  rollups   rebuild rollups  (also: python -m analytics.rollups)
  retention drop raw events and rollups past RETENTION_DAYS / ROLLUP_RETENTION_DAYS now
  import    load events from files: our export, or Umami's   (analytics.importer.cli)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "keys": "analytics.auth.cli",
    "privacy": "analytics.privacy.cli",
    "migrate": "analytics.migrations.__main__",
    "rollups": "analytics.rollups.__main__",
    "retention": "analytics.retention.cli",
    "import": "analytics.importer.cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
