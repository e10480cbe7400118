"""Record what tracker.min.js was built from (run by `make tracker` after esbuild): the hashes of
the source and of the minified file. tests/test_tracker_build.py compares them with the files,
so a stale or hand-edited tracker.min.js fails the tests without node being installed."""
import hashlib
import json
import sys
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "src" / "analytics" / "web" / "static"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    stamp = {"source": "tracker.src.js", "source_sha256": sha256(STATIC / "tracker.src.js"),
             "output": "tracker.min.js", "output_sha256": sha256(STATIC / "tracker.min.js"),
             "minifier": sys.argv[1] if len(sys.argv) > 1 else "esbuild"}
    (STATIC / "tracker.build.json").write_text(json.dumps(stamp, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
