"""ua-parser's rules with the answers of its reference parser, in bounded time.

uap-core's rules are 1,270 Python regular expressions (433 browser, 204 OS, 633 device rules);
each domain's are tried in order until one matches. Tried one after the other (the legacy
parser user-agents calls), a real user agent costs 0.5-1.5 ms and a 1 KB one 2-25 ms, on the
event loop. ua-parser 1.0's fast backends are not a drop-in: both match a *simplified* copy of
each rule (`.{0,100}` becomes `.*`), so past the rules' bounds they answer differently (the Rust
backend, ua-parser-rs, called 23 of 2,992 real crawler and browser strings "Spider" where the
reference did not, and names other browser families; the stock RE2 resolver gives up on a
domain when its first candidate fails the exact rule: 12 of them differ).

Here RE2 (linear time, no backtracking) is only a filter: one pass of a FilteredRE2 holding a
*widened* copy of every rule, which matches wherever the rule can match (and sometimes more),
says which rules may match; the original Python rules then decide, in rule order, among those
few candidates (at most 4 per string on the test corpora, against up to 1,270). Every rule
that matches in Python is a candidate, so the first candidate that matches is the rule the
reference parser would have picked: the same answers, at ~0.1 ms for a real user agent and
0.2-0.4 ms for a 1 KB one (CPU time, bench/README.md "User agents").

Exactness argument, for strings of ASCII characters (every real user agent): RE2 and Python
agree on `\\d \\w \\b`, `.`, `^`, character classes and case folding over ASCII; Python's `$`
also matches before a final newline and its `\\s` also matches \\v and \\x1c-\\x1f, both widened
here. Non-ASCII characters are widened too (`\\d \\w \\s` may match any of them, `\\b` is
dropped), which covers Python's Unicode classes. Python's case-insensitive i also matches İ and
ı (RE2's does not): a string holding them is also filtered with them read as i. (What remains
uncovered is contrived: one match that needs an İ read as i in one place and as itself in
another, on strings no browser sends.) A rule the widening cannot vouch for (a class escape
inside a negated class) is always a candidate. tests/test_user_agents.py checks equality with
the reference parser on a corpus of real strings and on hostile ones.
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Sequence, TypeVar

import re2
from ua_parser import Domain, Matchers, PartialResult

_NON_ASCII = r"\x{80}-\x{10FFFF}"
# What Python's \d \w \s can match (their Unicode classes collapsed to "any non-ASCII").
_WIDE = {"d": "0-9" + _NON_ASCII,
         "w": "A-Za-z0-9_" + _NON_ASCII,
         "s": r"\t\n\x0b\f\r\x1c-\x1f " + _NON_ASCII}
# Inside a negated class the ASCII sets are the wider choice ([^0-9] admits every Unicode digit).
_NARROW = {"d": "0-9", "w": "A-Za-z0-9_", "s": r"\t\n\x0b\f\r\x1c-\x1f "}


class NotWidenable(ValueError):
    """The rule has a construct for which no superset is written here."""


def widen(pattern: str) -> str:
    """An RE2 pattern that matches every string `pattern` matches under Python's re."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = negated = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            e = pattern[i + 1]
            i += 2
            if e in _WIDE:
                if not in_class:
                    out.append(f"[{_WIDE[e]}]")
                else:
                    out.append(_NARROW[e] if negated else _WIDE[e])
            elif e in "DWS" and in_class and negated:
                raise NotWidenable(pattern)
            elif e in "bB" and not in_class:
                pass  # an assertion only removes matches: without it the rule is wider
            else:
                out.append("\\" + e)
            continue
        if in_class:
            if c == "]":
                in_class = negated = False
        elif c == "[":
            in_class, negated = True, pattern[i + 1:i + 2] == "^"
            start = i + 1 + negated
            if pattern[start:start + 1] == "]":  # a ']' first in a class is a literal
                out.append(pattern[i:start + 1])
                i = start + 1
                continue
        elif c == "$":
            out.append(r"\n?$")  # Python's $ also matches before a final newline
            i += 1
            continue
        out.append(c)
        i += 1
    wide = "".join(out)
    return wide if pattern.startswith(_ANCHORED_BOUND) else _BOUNDED.sub(_unbound, wide)


def _unbound(m: re.Match) -> str:
    return "*" if m[1] == "0" else "+"


# uap-core bounds repetitions (`.{0,100}`) against Python's backtracking. In an automaton a bound
# costs states: RE2's caches for the rules as written took ~60 MB per worker, ~30 MB without the
# bounds (ua_parser.utils.fa_simplifier drops them for the same reason). Dropping one only widens
# the rule, so the Python rule still decides. Kept for the catch-all rules anchored at the start
# (`^.{0,100}(bot|crawl|...)`): their tokens often lie past the bound in long strings, where
# a widened copy would make them candidates whose Python check is the costly part (0.3 ms a
# hostile 1 KB string with their bounds kept, 1.4 ms without).
_BOUNDED = re.compile(r"\{(0|1)\s*,\s*\d{3,}\}")
_ANCHORED_BOUND = "^.{0,"


T = TypeVar("T")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Rule:
    """A compiled Python regular expression as a rule: what RuleList needs of ua-parser's."""

    def __init__(self, pattern: re.Pattern) -> None:
        self.pattern, self.regex, self.flags = pattern, pattern.pattern, pattern.flags

    def __call__(self, text: str) -> Optional[re.Match]:
        return self.pattern.search(text)


class RuleList:
    """Ordered rules (one ua-parser domain's): the RE2 filter over their widened copies, and the
    rules themselves, which decide."""

    def __init__(self, matchers: Sequence[Callable[[str], Optional[T]]],
                 accept: Callable[[T], bool]) -> None:
        self.matchers = list(matchers)
        self.accept = accept
        self.filter = re2.Filter()
        for m in self.matchers:
            try:
                wide = widen(m.regex)
            except NotWidenable:
                wide = ""  # matches everything: the rule is always a candidate
            prefix = "(?i)" if m.flags & re.IGNORECASE else ""
            self.filter.Add(prefix + wide)
        self.filter.Compile()

    def candidates(self, ua: str) -> list[int]:
        """Indexes, in rule order, of the rules that may match `ua` (all that do, and more)."""
        found = self._match(ua)
        if "\u0130" in ua or "\u0131" in ua:
            # Python's case-insensitive i also matches İ and ı, RE2's does not: the rules that
            # match with them read as i are candidates too.
            found = found | self._match(ua.replace("\u0130", "i").replace("\u0131", "i"))
        return sorted(found)

    def _match(self, text: str) -> set[int]:
        try:
            return set(self.filter.Match(text) or ())
        except UnicodeEncodeError:
            # A lone surrogate (JSON allows "\\ud800") has no UTF-8 form. U+FFFD stands in for
            # it: it is matched by everything the widened rules offer a surrogate (".", negated
            # ASCII classes, the non-ASCII ranges), so the candidates remain a superset.
            return set(self.filter.Match(_SURROGATE.sub("\ufffd", text)) or ())

    def resolve(self, ua: str) -> Optional[T]:
        """The first rule's answer that the rule list accepts, as trying every rule would."""
        for index in self.candidates(ua):
            try:
                result = self.matchers[index](ua)
            except ValueError:  # a replacement left the family empty: the reference moves on
                continue
            if result is not None and self.accept(result):
                return result
        return None


class ExactResolver:
    """A ua_parser Resolver: RE2 picks the candidate rules, the Python rules decide."""

    def __init__(self, matchers: Matchers) -> None:
        ua, os, device = matchers
        # The legacy parser takes the first rule giving a non-empty family.
        self._ua = RuleList(ua, lambda r: bool(r.family))
        self._os = RuleList(os, lambda r: bool(r.family))
        self._device = RuleList(device, lambda r: bool(r.family))

    def __call__(self, ua: str, domains: Domain, /) -> PartialResult:
        return PartialResult(
            domains=domains, string=ua,
            user_agent=self._ua.resolve(ua) if Domain.USER_AGENT in domains else None,
            os=self._os.resolve(ua) if Domain.OS in domains else None,
            device=self._device.resolve(ua) if Domain.DEVICE in domains else None)
