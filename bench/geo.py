"""Country lookup benchmark: `python -m bench geo [--mmdb PATH ...]`. A few seconds per source.

For the packaged database (iptocc) and for each .mmdb file given (--mmdb, repeatable; GEOIP_DB
when set), each in a fresh interpreter (so that load time and memory are its own), through
`analytics.ingestion.geo.country_of`, the function the write path calls:

  - load: the first lookup of a worker (importing the reader, opening the file, the first
    answer), ms;
  - memory: RSS and PSS added by the load, and after --n lookups of random addresses (that
    figure includes the 2 x --n address strings themselves, about 4 MiB at the default; a
    .mmdb is memory-mapped: the pages it touched are page cache, shared by every worker);
  - lookup cost, warm: µs per call on --n random IPv4 and --n random IPv6 addresses (best of 3
    rounds), and the share of them that got a country;
  - accuracy on KNOWN: addresses whose block's registrant is documented (the source of truth
    used: the registrant organisation and country of the block in its Regional Internet
    Registry's whois/RDAP record, noted next to each), and the misses.

Databases to try it on without a licence key: the PyPI packages maxminddb-geolite2 (a 2018
GeoLite2-City.mmdb) and python-geoacumen (Geoacumen-Country.mmdb, 2024); install them in a
scratch virtualenv, not in the project's, and pass the file's path with --mmdb.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# address -> (country, registrant of the block, registry)
KNOWN: dict[str, tuple[str, str]] = {
    "8.8.8.8": ("US", "Google LLC, Google Public DNS (ARIN)"),
    "208.67.222.222": ("US", "Cisco OpenDNS (ARIN)"),
    "77.88.8.8": ("RU", "Yandex LLC, Yandex DNS (RIPE NCC)"),
    "114.114.114.114": ("CN", "Nanjing Xinfeng, 114DNS (APNIC)"),
    "168.126.63.1": ("KR", "Korea Telecom DNS (APNIC/KRNIC)"),
    "193.0.14.129": ("NL", "RIPE NCC, k.root-servers.net (RIPE NCC)"),
    "129.132.1.1": ("CH", "ETH Zurich, 129.132.0.0/16 (RIPE NCC)"),
    "128.232.1.1": ("GB", "University of Cambridge, 128.232.0.0/16 (RIPE NCC)"),
    "130.149.1.1": ("DE", "Technische Universitaet Berlin, 130.149.0.0/16 (RIPE NCC)"),
    "133.11.1.1": ("JP", "The University of Tokyo, 133.11.0.0/16 (APNIC/JPNIC)"),
    "200.160.2.3": ("BR", "NIC.br, registro.br (LACNIC)"),
    "2001:4860:4860::8888": ("US", "Google LLC, Google Public DNS (ARIN)"),
    "2a02:6b8::feed:ff": ("RU", "Yandex LLC, 2a02:6b8::/32 (RIPE NCC)"),
    "2001:67c:2e8:22::c100:68b": ("NL", "RIPE NCC, www.ripe.net (RIPE NCC)"),
    "2001:620::1": ("CH", "SWITCH, the Swiss research network, 2001:620::/32 (RIPE NCC)"),
    "2001:200::1": ("JP", "WIDE project, 2001:200::/32 (APNIC/JPNIC)"),
    "2001:da8::1": ("CN", "CERNET, 2001:da8::/32 (APNIC/CNNIC)"),
    "2001:630::1": ("GB", "Jisc/JANET, 2001:630::/32 (RIPE NCC)"),
    "2001:638::1": ("DE", "DFN, the German research network, 2001:638::/32 (RIPE NCC)"),
    "2001:12ff::1": ("BR", "NIC.br, 2001:12ff::/32 (LACNIC)"),
}
NOT_PUBLIC = ["10.0.0.1", "192.168.1.1", "127.0.0.1", "169.254.1.1", "100.64.0.1", "192.0.2.1",
              "::1", "fe80::1", "fd00::1", "2001:db8::1", "::ffff:10.0.0.1"]

# Run in a fresh interpreter: argv[1] is the GEOIP_DB path ('' for the packaged database).
_CHILD = r"""
import json, os, random, sys, time
sys.path.insert(0, os.environ["GEO_SRC"])

def mem():
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("Rss", "Pss"):
                out[key] = int(line.split()[1]) / 1024
    return out

path, n, known, not_public = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
from analytics.ingestion import geo  # a worker has imported it (and ipaddress) already
m0 = mem()
t0 = time.perf_counter()
if path:
    geo.open_mmdb(path)  # what config.py does when the settings are read
geo.load(path)
geo.country_of("8.8.8.8")
load_ms = (time.perf_counter() - t0) * 1000
m1 = mem()
rnd = random.Random(11)
v4 = [f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
      for _ in range(n)]
# IPv6: random addresses in allocated /32s (random ones in 2000::/3 are mostly unallocated)
blocks = ["2001:4860", "2a02:6b8", "2001:67c", "2001:620", "2001:200", "2001:da8", "2001:630",
          "2001:638", "2001:12ff", "2a00:1450", "2a03:2880", "2400:cb00", "2600:1f18", "2c0f:fb50"]
v6 = [f"{rnd.choice(blocks)}:{rnd.randrange(65536):x}:{rnd.randrange(65536):x}::{rnd.randrange(1, 65536):x}"
      for _ in range(n)]
f = geo.country_of

def cost(xs):
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for a in xs:
            f(a)
        best = min(best, (time.perf_counter() - t) / len(xs) * 1e6)
    return best, sum(1 for a in xs if f(a)) / len(xs)

us4, hit4 = cost(v4)
us6, hit6 = cost(v6)
m2 = mem()
answers = {a: f(a) for a in list(known) + not_public}
print(json.dumps({"load_ms": load_ms, "rss_load": m1["Rss"] - m0["Rss"], "pss_load": m1["Pss"] - m0["Pss"],
                  "rss_used": m2["Rss"] - m0["Rss"], "pss_used": m2["Pss"] - m0["Pss"],
                  "us4": us4, "us6": us6, "hit4": hit4, "hit6": hit6, "answers": answers}))
"""


def measure(path: str, n: int) -> dict:
    env = {**os.environ, "GEO_SRC": str(ROOT / "src")}
    env.pop("GEOIP_DB", None)  # the child is told its source; settings must not override it
    known = {a: c for a, (c, _) in KNOWN.items()}
    out = subprocess.run([sys.executable, "-c", _CHILD, path, str(n), json.dumps(known),
                          json.dumps(NOT_PUBLIC)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def report(name: str, r: dict) -> None:
    print(f"\n{name}")
    print(f"  load (first lookup of a worker)   {r['load_ms']:8.1f} ms")
    print(f"  memory after load                 RSS +{r['rss_load']:.1f} MiB, PSS +{r['pss_load']:.1f} MiB")
    print(f"  memory after the lookups          RSS +{r['rss_used']:.1f} MiB, PSS +{r['pss_used']:.1f} MiB")
    print(f"  lookup, warm, IPv4                {r['us4']:8.2f} µs   ({r['hit4']:.0%} of random addresses got a country)")
    print(f"  lookup, warm, IPv6                {r['us6']:8.2f} µs   ({r['hit6']:.0%})")
    answers = r["answers"]
    right = [a for a, (c, _) in KNOWN.items() if answers[a] == c]
    print(f"  known ranges                      {len(right)}/{len(KNOWN)} as registered")
    for a, (c, who) in KNOWN.items():
        if answers[a] != c:
            print(f"    {a:28} {answers[a] or '-':3} (registered {c}: {who})")
    leaked = [a for a in NOT_PUBLIC if answers[a]]
    print(f"  non-public addresses with a country: {len(leaked)}/{len(NOT_PUBLIC)} {leaked or ''}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench geo")
    ap.add_argument("--mmdb", action="append", default=[], help="a .mmdb file to measure too")
    ap.add_argument("--n", type=int, default=20000, help="random addresses per family")
    args = ap.parse_args(argv)
    paths = list(args.mmdb) + ([os.environ["GEOIP_DB"]] if os.environ.get("GEOIP_DB") else [])
    print(f"country lookups through analytics.ingestion.geo.country_of, {args.n} random addresses "
          "per family, best of 3 rounds")
    report("packaged database (iptocc)", measure("", args.n))
    for path in paths:
        report(f"GEOIP_DB={path}", measure(path, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
