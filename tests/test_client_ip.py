"""web/client.py: the client address, and who may tell us a different one."""
import pytest

from analytics.web.client import client_ip, parse_networks, resolve

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


def scope(peer, *headers):
    return {"client": (peer, 1234) if peer else None,
            "headers": [(k.encode(), v.encode()) for k, v in headers]}


def test_untrusted_peer_headers_are_ignored():
    s = scope("203.0.113.9", ("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8"))
    assert resolve(s, PROXIES) == "203.0.113.9"
    assert resolve(s, ()) == "203.0.113.9"


def test_trusted_proxy_read_from_the_right_skipping_trusted_hops():
    # the client wrote 1.1.1.1 itself; 198.51.100.7 reached our first proxy 10.0.0.2
    s = scope("10.0.0.1", ("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.2"))
    assert resolve(s, PROXIES) == "198.51.100.7"


def test_forwarded_header_wins_and_handles_ports_and_brackets():
    s = scope("10.0.0.1", ("forwarded", 'for="[2001:db9::5]:4711";proto=https, for=10.1.1.1'),
              ("x-forwarded-for", "9.9.9.9"))
    assert resolve(s, PROXIES) == "2001:db9::5"
    s = scope("10.0.0.1", ("forwarded", "for=192.0.2.60:8080"))
    assert resolve(s, PROXIES) == "192.0.2.60"


@pytest.mark.parametrize("xff", ["unknown", "", "not-an-ip, ", "_hidden"])
def test_garbage_from_a_trusted_proxy_stops_at_the_proxy(xff):
    assert resolve(scope("10.0.0.1", ("x-forwarded-for", xff)), PROXIES) == "10.0.0.1"


def test_all_hops_trusted_gives_the_leftmost():
    assert resolve(scope("10.0.0.1", ("x-forwarded-for", "10.9.9.9, 10.0.0.3")), PROXIES) == "10.9.9.9"


def test_mapped_v4_and_no_peer():
    assert resolve(scope("::ffff:203.0.113.1"), PROXIES) == "203.0.113.1"
    assert resolve(scope(None), PROXIES) == ""


def test_cached_per_request():
    s = scope("203.0.113.9")
    assert client_ip(s, PROXIES) == "203.0.113.9"
    s["client"] = ("198.51.100.1", 1)
    assert client_ip(s, PROXIES) == "203.0.113.9"


def test_bad_cidr_is_named():
    with pytest.raises(ValueError, match="nope"):
        parse_networks(["10.0.0.0/8", "nope"])
