"""`python -m bench.fields_sizes`: rows of candidate rollup families for issue 11's dimensions
(name, hostname, country, utm_source/medium/campaign), simulated: a site of 10M events over 90
days (4,630 an hour), 120 countries and 60 campaigns (Zipf), 30% of visits with UTM, six event
names, three host names; 14 days. Prints raw events / rollup rows per family and grain (the
rollup catalog keeps families >= ~10x smaller than raw). Distinct keys per bucket only: no
database needed."""
import random
rng = random.Random(1)
def zipf(n, s=1.1):
    w = [1 / (i + 1) ** s for i in range(n)]
    return w
COUNTRIES = [f"C{i}" for i in range(120)]; CW = zipf(120)
NAMES = ["pageview"] * 1 + ["Signup", "Outbound Link: Click", "File Download", "engagement", "Purchase"]
NW = [80, 2, 4, 2, 11, 1]
HOSTS = ["shop.example", "www.shop.example", "blog.example"]; HW = [80, 5, 15]
CAMPAIGNS = [(s, m, f"c{i}") for i, (s, m) in enumerate([(rng.choice(["google", "news", "fb", "twitter", "bing"]),
              rng.choice(["cpc", "email", "social"])) for _ in range(60)])]; UW = zipf(60)
per_hour, hours = 4630, 24 * 14
import collections
fams = {"name_host": (1, 2), "country": (3,), "utm": (4, 5, 6), "name_host_country": (1, 2, 3), "all6": (1,2,3,4,5,6)}
rows = collections.Counter(); rows_d = collections.Counter(); day = collections.defaultdict(set)
for h in range(hours):
    hs = collections.defaultdict(set)
    for _ in range(per_hour):
        utm = ("", "", "") if rng.random() < 0.7 else rng.choices(CAMPAIGNS, UW)[0]
        key = (rng.random() < 0.02, rng.choices(NAMES, NW)[0], rng.choices(HOSTS, HW)[0], rng.choices(COUNTRIES, CW)[0], *utm)
        for f, idx in fams.items():
            k = (key[0],) + tuple(key[i] for i in idx)
            hs[f].add(k); day[f].add(k)
    for f in fams: rows[f] += len(hs[f])
    if h % 24 == 23:
        for f in fams: rows_d[f] += len(day[f])
        day = collections.defaultdict(set)
ev = per_hour * hours
for f in fams: print(f, f"1h {ev/rows[f]:.1f}x  1d {ev/rows_d[f]:.1f}x")
