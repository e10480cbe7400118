"""The shipped tracker (src/analytics/web/static/tracker.min.js) is what `make tracker` builds
from tracker.src.js, and within its budget. No node needed: `make tracker` records the hashes
of both files (tracker.build.json), and these tests compare them with the files."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "src" / "analytics" / "web" / "static"
BUDGET_GZIPPED = 1024


def _sha(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()


def test_tracker_min_is_built_from_the_current_source():
    stamp = json.loads((STATIC / "tracker.build.json").read_text())
    assert stamp["source_sha256"] == _sha("tracker.src.js"), (
        "tracker.src.js changed since tracker.min.js was built: run `make tracker` and commit both")
    assert stamp["output_sha256"] == _sha("tracker.min.js"), (
        "tracker.min.js is not the file `make tracker` built (edited by hand?): run `make tracker`")


def test_tracker_is_within_its_gzipped_budget():
    size = len(gzip.compress((STATIC / "tracker.min.js").read_bytes(), compresslevel=9))
    assert size <= BUDGET_GZIPPED, f"tracker.min.js is {size} bytes gzipped, over {BUDGET_GZIPPED}"


def test_the_served_script_is_the_shipped_file():
    from analytics.web import tracker
    assert tracker.SCRIPT == (STATIC / "tracker.min.js").read_bytes()
    assert len(tracker.SCRIPT_GZ) <= BUDGET_GZIPPED
