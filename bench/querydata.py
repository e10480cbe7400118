"""Synthetic but realistic events for the query benchmark, generated inside PostgreSQL.

Sessions of several events (geometric length, mean about 5), a Zipf-like page popularity over
300 paths, real user agents with the service's own classification (os/browser/device/bot), an
entry referrer per session and integer durations; each session one visitor (visitor_id: so
visits and unique visitors have data), a country, UTM parameters on 15% of entries, and 5% of
later events a custom `signup` event. Written straight into the events table, so
the rollups are then rebuilt with the documented command.
"""
from __future__ import annotations

import psycopg

from analytics.ingestion.enrich import classify, referrer_host

# (user agent, weight)
USER_AGENTS = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 30),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", 8),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", 5),
    ("Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/109.0.0.0 Safari/537.36", 2),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 9),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4.1 Safari/605.1.15", 7),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0", 2),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4.1 Mobile/15E148 Safari/604.1", 12),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", 3),
    ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", 2),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.6367.82 Mobile Safari/537.36", 10),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", 3),
    ("Mozilla/5.0 (Linux; Android 13; SM-X706B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 1),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36 OPR/81.0.4196.60", 1),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 2),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 1),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", 1),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 2),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 1),
    ("", 1),
]

# Entry referrers (weight); later events of a session have none.
REFERRERS = [
    ("", 45), ("https://www.google.com/", 25), ("https://duckduckgo.com/", 4),
    ("https://www.bing.com/", 4), ("https://news.ycombinator.com/", 4),
    ("https://www.reddit.com/r/programming/", 3), ("https://t.co/abc123", 3),
    ("https://www.facebook.com/", 3), ("https://www.linkedin.com/feed/", 2),
    ("https://github.com/some/repo", 2), ("https://stackoverflow.com/questions/1", 2),
    ("https://m.youtube.com/", 1), ("https://newsletter.example.org/issue/42", 1),
    ("https://blog.example.net/post", 1),
]

# Countries (ISO 3166 alpha-2, weight); '' is an address no database places.
COUNTRIES = [("US", 30), ("DE", 10), ("GB", 8), ("IN", 8), ("FR", 6), ("BR", 5), ("CA", 4), ("JP", 4),
             ("NL", 3), ("ES", 3), ("IT", 3), ("PL", 2), ("SE", 2), ("AU", 2), ("", 5)]

_NAMED_PAGES = ["/", "/pricing", "/about", "/blog", "/docs", "/login", "/register", "/contact",
                "/products", "/services", "/support", "/dashboard", "/settings", "/features",
                "/docs/getting-started", "/docs/api", "/careers", "/changelog", "/security",
                "/terms", "/privacy"]
N_PAGES = 300


def _weighted(rows: list[tuple]) -> list[tuple]:
    """(idx, lo, hi, *row[:-1]) where [lo, hi) is the row's share of [0, 1) by weight row[-1]."""
    total = float(sum(r[-1] for r in rows))
    acc = 0.0
    out = []
    for i, r in enumerate(rows):
        lo = acc / total
        acc += r[-1]
        out.append((i, lo, 1.0 if i == len(rows) - 1 else acc / total, *r[:-1]))
    return out


def load(conn: psycopg.Connection, events: int, days: int = 90, seed: float = 0.42) -> None:
    """Insert `events` events spread over the last `days` days (in the connection's schema)."""
    conn.execute("SELECT setseed(%s)", (seed,))
    conn.execute("""CREATE TEMP TABLE q_ua (idx int, lo float8, hi float8, ua text, os text,
                    browser text, device text, is_bot bool) ON COMMIT DROP""")
    conn.execute("""CREATE TEMP TABLE q_ref (idx int, lo float8, hi float8, url text, host text)
                    ON COMMIT DROP""")
    conn.execute("CREATE TEMP TABLE q_page (idx int PRIMARY KEY, page text) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE q_cty (idx int, lo float8, hi float8, cc text) ON COMMIT DROP")
    ua_rows = []
    for ua, w in USER_AGENTS:
        info = classify(ua)
        ua_rows.append((ua, info.os, info.browser, info.device, info.is_bot, w))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO q_ua VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                        _weighted(ua_rows))
        cur.executemany("INSERT INTO q_ref VALUES (%s,%s,%s,%s,%s)",
                        _weighted([(u, referrer_host(u), w) for u, w in REFERRERS]))
        pages = _NAMED_PAGES + [f"/blog/post-{i}" for i in range(1, N_PAGES - len(_NAMED_PAGES) + 1)]
        cur.executemany("INSERT INTO q_page VALUES (%s,%s)", list(enumerate(pages, start=1)))
        cur.executemany("INSERT INTO q_cty VALUES (%s,%s,%s,%s)", _weighted(COUNTRIES))
    # Sessions: start uniform over the days with a daily peak (triangular within the day), 1 + geometric(mean 4) events
    # spaced 10-180 s apart; pages Zipf-like (P(k) ~ 1/k) via floor(N ** random()).
    sessions = events // 4 + 1000
    conn.execute("""
        INSERT INTO events (id, time, page, ip_address, user_agent, referrer, referrer_host,
                            session_id, duration, description, os, browser, device, is_bot,
                            visitor_id, name, hostname, country, utm_source, utm_medium, utm_campaign)
        SELECT gen_random_uuid(), e.time, p.page, s.ip, u.ua,
               CASE WHEN e.k = 0 THEN r.url ELSE '' END,
               CASE WHEN e.k = 0 THEN r.host ELSE '' END,
               s.sid, e.duration, NULL, u.os, u.browser, u.device, u.is_bot,
               hashtextextended(s.sid, 0),
               CASE WHEN e.k > 0 AND e.rn < 0.05 THEN 'signup' ELSE 'pageview' END,
               'example.com', c.cc,
               CASE WHEN e.k = 0 AND s.rm < 0.15 THEN (ARRAY['newsletter', 'twitter', 'google'])[1 + floor(s.rm / 0.05)::int] ELSE '' END,
               CASE WHEN e.k = 0 AND s.rm < 0.15 THEN (ARRAY['email', 'social', 'cpc'])[1 + floor(s.rm / 0.05)::int] ELSE '' END,
               CASE WHEN e.k = 0 AND s.rm < 0.15 THEN (ARRAY['spring', 'launch', 'brand'])[1 + floor(s.rm / 0.05)::int] ELSE '' END
        FROM (
            SELECT n, 'sess-' || n AS sid,
                   '10.' || (n %% 250) || '.' || (n / 250 %% 250) || '.' || (n / 62500 %% 250) AS ip,
                   now() - %(days)s * interval '1 day'
                     + (floor(random() * %(days)s) * 86400
                        + 43200 * (random() + random())) * interval '1 second' AS t0,
                   1 + floor(-ln(1 - random()) * 4)::int AS len,
                   10 + floor(random() * 170)::int AS gap,
                   random() AS ru, random() AS rr, random() AS rc, random() AS rm
            FROM generate_series(1, %(sessions)s) AS n
        ) s
        JOIN q_ua u ON s.ru >= u.lo AND s.ru < u.hi
        JOIN q_ref r ON s.rr >= r.lo AND s.rr < r.hi
        JOIN q_cty c ON s.rc >= c.lo AND s.rc < c.hi
        CROSS JOIN LATERAL (
            SELECT k, s.t0 + k * s.gap * interval '1 second' AS time,
                   floor(-ln(1 - random()) * 60)::int AS duration, random() AS rn,
                   least(%(npages)s, floor(power(%(npages)s, random()))::int) AS page_idx
            FROM generate_series(0, least(s.len, 40) - 1) AS k
        ) e
        JOIN q_page p ON p.idx = e.page_idx
        WHERE e.time < now()
        LIMIT %(events)s
    """, {"days": days, "sessions": sessions, "events": events, "npages": N_PAGES})
