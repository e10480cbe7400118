"""Write-time enrichment: user agent → os/browser/device/bot, referrer → host.

The classification is user-agents' (its is_mobile/is_tablet/is_pc/is_bot rules over
ua-parser's results), but ua-parser's rules are matched by uaparse.ExactResolver: the same
answers as the legacy parser user-agents calls, at ~0.04 ms for a common user agent and well
under 1 ms for a hostile 1 KB one, instead of ~1.5 ms and 20-25 ms (numbers: bench/README.md,
"User agents"). Traffic repeats a small set of strings, so answers are also kept in a bounded
LRU cache and the common case is a dict lookup.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Callable
from threading import Lock
from urllib.parse import urlsplit

import ua_parser
from ua_parser import Domain
from user_agents import parse as parse_user_agent_legacy
from user_agents.parsers import UserAgent, parse_browser, parse_device, parse_operating_system

from .uaparse import ExactResolver, Rule, RuleList

OS_NAMES = ("Windows", "MacOS", "iOS", "Android", "Linux", "ChromeOS", "Other")
DEVICES = ("desktop", "mobile", "tablet", "bot", "other")

# FreeBSD and other BSDs are not Linux: they are "Other".
_LINUX_FAMILIES = {"linux", "ubuntu", "debian", "fedora", "red hat", "suse", "opensuse",
                   "gentoo", "mint", "linux mint", "arch linux", "centos", "kubuntu", "slackware",
                   "mandriva"}

# Automated agents that ua-parser files under a browser: Applebot (a Safari UA plus a token),
# headless browsers, and any agent naming a crawler with a version or an info URL.
_EXTRA_BOT = re.compile(r"applebot|headlesschrome|phantomjs|(?:bot|spider|crawler)/\d|\+https?://",
                        re.IGNORECASE)
# Python's re scans a 1 KB string for that alternation in ~50 µs, RE2 in ~7: RE2 says whether
# Python needs to look (same answers: see uaparse.RuleList).
_EXTRA_BOT_RULE = RuleList([Rule(_EXTRA_BOT)], accept=lambda match: True)


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    os: str
    browser: str
    device: str
    is_bot: bool


_EMPTY = UserAgentInfo(os="Other", browser="Other", device="other", is_bot=False)


def _os_name(family: str, ua_string: str) -> str:
    f = family.lower()
    if f.startswith("windows"):
        return "Windows"
    if f in ("ios", "ipados"):
        return "iOS"
    if f.startswith("mac os") or f == "macos":
        return "MacOS"
    if f == "android":
        return "Android"
    if f in ("chrome os", "chromeos") or "CrOS" in ua_string:
        return "ChromeOS"
    if f in _LINUX_FAMILIES:
        return "Linux"
    return "Other"


class _ResolvedUserAgent(UserAgent):
    """user-agents' UserAgent, with its is_mobile/is_tablet/is_pc/is_bot rules unchanged, built
    from a ua-parser result instead of parsing the string again with the legacy parser. The
    fields are what the legacy parser's dicts hold: a domain without a match is "Other"."""

    def __init__(self, ua_string: str, result: ua_parser.PartialResult) -> None:  # no super().__init__: it would parse again
        browser, os, device = result.user_agent, result.os, result.device
        self.ua_string = ua_string
        self.browser = (parse_browser(browser.family, browser.major, browser.minor, browser.patch)
                        if browser else parse_browser("Other"))
        self.os = (parse_operating_system(os.family, os.major, os.minor, os.patch, os.patch_minor)
                   if os else parse_operating_system("Other"))
        self.device = (parse_device(device.family, device.brand, device.model)
                       if device else parse_device("Other", None, None))


@cache
def resolver() -> ExactResolver:
    """The process's resolver over ua-parser's bundled rules (~1 s to build: call it once at
    startup, off the event loop, not on the first request)."""
    return ExactResolver(ua_parser.load_builtins())


def classify(ua_string: str) -> UserAgentInfo:
    """Classify one user agent string (uncached)."""
    if not ua_string:
        return _EMPTY
    ua = _ResolvedUserAgent(ua_string, resolver()(ua_string, Domain.ALL))
    return _info(ua, ua_string, lambda s: _EXTRA_BOT_RULE.resolve(s) is not None)


def classify_reference(ua_string: str) -> UserAgentInfo:
    """The same classification through user-agents' own parse (the legacy pure-Python parser,
    ~1.5 ms a string): the reference the tests and bench/ua.py compare classify() with."""
    if not ua_string:
        return _EMPTY
    return _info(parse_user_agent_legacy(ua_string), ua_string,
                 lambda s: _EXTRA_BOT.search(s) is not None)


def _info(ua: UserAgent, ua_string: str, extra_bot: Callable[[str], bool]) -> UserAgentInfo:
    is_bot = bool(ua.is_bot) or extra_bot(ua_string)
    if is_bot:
        device = "bot"
    elif ua.is_tablet:
        device = "tablet"
    elif ua.is_mobile:
        device = "mobile"
    elif ua.is_pc:
        device = "desktop"
    else:
        device = "other"
    browser = (ua.browser.family or "Other")[:64]
    return UserAgentInfo(os=_os_name(ua.os.family or "", ua_string), browser=browser,
                         device=device, is_bot=is_bot)


class UserAgentCache:
    """Bounded LRU of classify(); thread-safe so it can be filled from a worker thread."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = max(1, maxsize)
        self._data: OrderedDict[str, UserAgentInfo] = OrderedDict()
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def get(self, ua_string: str) -> UserAgentInfo | None:
        info = self._data.get(ua_string)
        if info is not None:
            self.hits += 1
            # move_to_end keeps hot strings; done without the lock, a race only reorders.
            try:
                self._data.move_to_end(ua_string)
            except KeyError:
                pass
        return info

    def put(self, ua_string: str, info: UserAgentInfo) -> None:
        with self._lock:
            self.misses += 1
            self._data[ua_string] = info
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def lookup(self, ua_string: str) -> UserAgentInfo:
        info = self.get(ua_string)
        if info is None:
            info = classify(ua_string)
            self.put(ua_string, info)
        return info

    def __len__(self) -> int:
        return len(self._data)


def referrer_host(referrer: str | None) -> str:
    """The referrer's host name, lower-cased, without a leading 'www.'; '' when there is none."""
    if not referrer:
        return ""
    return _referrer_host(referrer)


# Referrers repeat (a search engine, a social site, the site itself): urlsplit was a sixth of
# the enrichment time. Bounded, like the user-agent cache.
@lru_cache(maxsize=4096)
def _referrer_host(referrer: str) -> str:
    try:
        host = urlsplit(referrer if "//" in referrer else "//" + referrer).hostname or ""
    except ValueError:
        return ""
    host = host.lower()
    return host[4:] if host.startswith("www.") else host
