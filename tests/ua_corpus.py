"""Corpora of user agents shared by tests/test_user_agents.py and bench/ua.py: real ones from
two packages (test-only dependencies), seeded hostile ones, seeded ~1 KB realistic ones."""
from __future__ import annotations

import importlib.resources
import json
import random
import string
from functools import cache


@cache
def real_corpus() -> tuple[str, ...]:
    """Distinct real user agents: fake-useragent's database of browsers seen in the wild, and
    crawler-user-agents' sample instances of ~600 crawlers."""
    import crawleruseragents
    browsers = (importlib.resources.files("fake_useragent") / "data" / "browsers.jsonl").read_text()
    found = {json.loads(line)["useragent"] for line in browsers.splitlines() if line.strip()}
    found |= {ua for crawler in crawleruseragents.CRAWLER_USER_AGENTS_DATA
              for ua in crawler.get("instances", [])}
    return tuple(sorted(found))


@cache
def hostile_corpus() -> tuple[str, ...]:
    """Seeded strings up to 1 KB that real clients do not send: random printable and non-ASCII
    characters (lone surrogates, Unicode digits, Kelvin sign, dotted/dotless i), real strings
    glued together past the rules' bounds, long runs, control characters, a trailing newline."""
    rng = random.Random(9)
    real = real_corpus()
    alphabet = string.printable + "é٣\u212a\u0130\u0131\ud800中\x0b\x1c"
    out = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 1024))) for _ in range(150)]
    out += [(rng.choice(real) + " " + " ".join(rng.sample(real, 10)))[:1024] for _ in range(150)]
    out += [("x" * 300 + " " + " ".join(rng.sample(real, 8)))[:1024] for _ in range(50)]
    # Python's case-insensitive i matches İ and ı ("Baıduspıder" is a spider to the reference).
    out += [ua.replace("i", rng.choice("\u0130\u0131")).replace("I", "\u0130")
            for ua in rng.sample([ua for ua in real if "pider" in ua or "bot" in ua], 60)]
    out += ["Mozilla/5.0 (Linux; Android 10; " + "; " * 495, ";" * 1024, "中" * 1024, "a" * 1024,
            "Mozilla/5.0 (Windows NT 10.0)\n", "x PTST/12\n", " PTST/12", "Mozilla/5.0 (" + " " * 1000,
            # enrich's own bot rule: a Unicode digit, İ and ı read as i, upper case
            "Mozilla/5.0 Foo bot/\u0663", "Mozilla/5.0 SP\u0130DER/1", "Mozilla/5.0 sp\u0131der/2",
            "Mozilla/5.0 HEADLESSCHROME/1", "Mozilla/5.0 (X11) +https://example.org/"]
    return tuple(out)


def long_user_agents(n: int, seed: int = 11) -> list[str]:
    """n distinct ~1 KB user agents that look real: a real browser string followed by the kind
    of tokens in-app browsers and extensions append, cut at the 1,024-character cap."""
    rng = random.Random(seed)
    real = [ua for ua in real_corpus() if ua.startswith("Mozilla/5.0 (")]
    apps = ["FBAN/FBIOS", "FBAV", "Instagram", "Line", "KAKAOTALK", "MicroMessenger", "GSA",
            "DuckDuckGo", "Brave", "YaBrowser", "NetType/WIFI", "Language/en_US", "ABTest"]
    out = []
    for i in range(n):
        tokens = [f"{rng.choice(apps)}/{rng.randint(1, 400)}.{rng.randint(0, 99)}.{i}"
                  for _ in range(80)]
        out.append((f"{rng.choice(real)} " + " ".join(tokens))[:1000 + i % 24])
    assert len(set(out)) == n
    return out


