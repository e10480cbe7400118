"""Dashboard load time in a real headless Chromium: from navigation to the last chart drawn.

    python -m bench dashboard [--events N] [--days D] [--reps R] [--db NAME] [--reuse] [--keep]

1. A database of many events, made as the query benchmark makes its own (bench/query.py: N
   events, default 10,000,000, over D days ending now, generated in SQL, rollups rebuilt with
   the documented command). `--db analytics_bench_query --reuse` measures on the database that
   `python -m bench query --keep` left.
2. The service by its production command (gunicorn, 2 workers), the answer cache off
   (STATS_CACHE_TTL_SECONDS=0): every panel's read reaches the database each time.
3. /dashboard opened R times per view in Chromium (boot/chromium.sh; Playwright), each in a new
   browser context (no HTTP cache, no connection kept: a first visit), then R reloads in one
   context (a returning visitor: assets revalidated). The figure is the page's own
   `performance.mark('dashboard-ready')`, set once every tile, panel and the chart are drawn;
   its startTime is measured from the navigation's start.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import psycopg

from bench import query as qb

ROOT = Path(__file__).resolve().parent.parent
VIEWS = [  # (name, URL query)
    ("last 30 days (default view)", "period=30d&tz=UTC"),
    ("last 7 days", "period=7d&tz=UTC"),
    ("today (hourly)", "period=today&tz=UTC"),
    ("30 days, filtered by a page", "period=30d&tz=UTC&page=/"),
    ("30 days, another zone", "period=30d&tz=America/New_York"),
]


def _chromium() -> str:
    r = subprocess.run(["bash", str(ROOT / "boot" / "chromium.sh"), "path"], capture_output=True, text=True)
    if not r.stdout.strip():
        raise SystemExit("no Chromium: run `make browser` (or set CHROMIUM_PATH)")
    return r.stdout.strip()


def _ready_ms(page, url: str) -> float:
    page.goto(url)
    page.wait_for_function("() => ['ready', 'error'].includes(document.getElementById('dash').dataset.state)",
                           timeout=120_000)
    errors = page.evaluate("""() => [document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
        ...[...document.querySelectorAll('[data-error]')].map(p => p.dataset.dimension + ': ' + p.textContent)]
        .filter(Boolean).join('; ')""")
    if errors:
        raise SystemExit(f"the dashboard showed an error: {errors}")
    return page.evaluate("() => performance.getEntriesByName('dashboard-ready')[0].startTime")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def measure(base_url: str, key: str, reps: int) -> list[tuple[str, list[float], list[float]]]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium())
        try:
            init = f"localStorage.setItem('analytics_dashboard_key', {key!r})"
            for name, q in VIEWS:
                url = f"{base_url}/dashboard?{q}"
                cold = []
                for _ in range(reps):
                    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                    ctx.add_init_script(init)
                    cold.append(_ready_ms(ctx.new_page(), url))
                    ctx.close()
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                ctx.add_init_script(init)
                page = ctx.new_page()
                _ready_ms(page, url)
                warm = [_ready_ms(page, url) for _ in range(reps)]
                ctx.close()
                out.append((name, cold, warm))
                print(f"  measured: {name}", flush=True)
        finally:
            browser.close()
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench dashboard")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--reps", type=int, default=7, help="loads per view (first visits, then reloads)")
    ap.add_argument("--db", default="analytics_bench_dashboard")
    ap.add_argument("--reuse", action="store_true", help="reuse a database kept by an earlier --keep run")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args(argv)

    from support import Server

    url = qb._url_for(args.db)
    loaded = qb._ensure_database(args.db, args.reuse)
    try:
        if not loaded:
            qb._bootstrap(url, qb.SCHEMA)
            qb._load(url, args.events, args.days)
            qb._rebuild(url)
        else:
            qb._fill_missing(url)
        with psycopg.connect(url) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (f"{qb.SCHEMA}, public",))
            (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
        srv = Server(url, qb.SCHEMA, workers=2, env={"STATS_CACHE_TTL_SECONDS": "0", "LOG_LEVEL": "WARNING"},
                     log_path=Path(f"/tmp/bench-dashboard-{os.getpid()}.log")).start()
        try:
            rows = measure(srv.url, srv.key["read"], args.reps)
        finally:
            srv.stop()
        print(f"\ndashboard load, navigation -> 'dashboard-ready' (every tile, panel and chart drawn): "
              f"{n:,} events over {args.days} days, headless Chromium, gunicorn 2 workers, answer cache "
              f"off, {args.reps} loads each")
        print(f"{'view':34s} {'first med':>10s} {'first max':>10s} {'reload med':>11s} {'reload max':>11s}")
        for name, cold, warm in rows:
            print(f"{name:34s} {statistics.median(cold):8.0f}ms {max(cold):8.0f}ms "
                  f"{statistics.median(warm):9.0f}ms {max(warm):9.0f}ms")
    finally:
        if not args.keep:
            qb._drop_database(args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
