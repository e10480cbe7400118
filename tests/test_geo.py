"""Countries of client addresses (src/analytics/ingestion/geo.py, issue 11 part 1).

The packaged database (iptocc: the registries' allocations) on addresses whose registrant is
documented, the addresses that must give '' (private, reserved, garbage), IPv6 and IPv4-mapped
IPv6; a GEOIP_DB .mmdb file (written here with mmdb-writer) taking over from the packaged
database; a bad GEOIP_DB stopping a real server at startup with the setting named.
"""
from __future__ import annotations

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from analytics.config import get_settings
from analytics.ingestion import geo
from support import Server, database_url, drop_schema, new_schema_name

# Address -> the country its block is registered to (RIR whois / RDAP of the block; the same
# list, with each registrant, is in bench/geo.py, which also measures accuracy).
KNOWN = {
    "8.8.8.8": "US",             # Google Public DNS (ARIN)
    "208.67.222.222": "US",      # OpenDNS (ARIN)
    "77.88.8.8": "RU",           # Yandex DNS (RIPE)
    "114.114.114.114": "CN",     # 114DNS (APNIC)
    "168.126.63.1": "KR",        # KT, Korea Telecom DNS (APNIC/KRNIC)
    "193.0.14.129": "NL",        # k.root-servers.net, RIPE NCC (RIPE)
    "129.132.1.1": "CH",         # ETH Zurich (RIPE)
    "128.232.1.1": "GB",         # University of Cambridge (RIPE)
    "133.11.1.1": "JP",          # University of Tokyo (APNIC/JPNIC)
    "200.160.2.3": "BR",         # NIC.br (LACNIC)
    "2001:4860:4860::8888": "US",  # Google Public DNS
    "2a02:6b8::feed:ff": "RU",      # Yandex
    "2001:67c:2e8:22::c100:68b": "NL",  # RIPE NCC
    "2001:620::1": "CH",            # SWITCH, the Swiss universities' network
    "2001:200::1": "JP",            # WIDE project
    "2001:da8::1": "CN",            # CERNET
}

NOT_PUBLIC = ["10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.1.1", "100.64.0.1",
              "0.0.0.0", "255.255.255.255", "224.0.0.1", "192.0.2.1", "198.51.100.7",
              "203.0.113.9", "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1",
              "ff02::1", "2001:db8::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1"]
GARBAGE = [None, "", " ", "garbage", "1.2.3", "300.1.1.1", "8.8.8.8 ", "08.8.8.8", "1.2.3.4.5",
           "[2001:4860:4860::8888]", "2001:4860:4860::8888::1", "::ffff:", "::ffff:garbage",
           "8.8.8.8:443", "x" * 10_000, "８.８.８.８", "2001:4860:4860::8888%1", "::ffff:8.8.8.8%eth0"]


@pytest.fixture(autouse=True)
def fresh_lookup(monkeypatch):
    """Each test picks its own source; none leaks into the next."""
    monkeypatch.delenv("GEOIP_DB", raising=False)
    monkeypatch.setattr(geo, "_lookup", None)
    yield


@pytest.mark.parametrize("address, country", KNOWN.items())
def test_known_addresses(address, country):
    assert geo.country_of(address) == country


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_private_loopback_link_local_and_reserved_have_no_country(address):
    assert geo.country_of(address) == ""


@pytest.mark.parametrize("address", GARBAGE)
def test_missing_or_unparsable_has_no_country(address):
    assert geo.country_of(address) == ""


@pytest.mark.parametrize("address, country", [("::ffff:8.8.8.8", "US"), ("::FFFF:77.88.8.8", "RU"),
                                              ("::ffff:808:808", "US")])
def test_ipv4_mapped_ipv6_is_its_ipv4_address(address, country):
    assert geo.country_of(address) == country


def test_ipv6_in_any_spelling():
    assert geo.country_of("2001:4860:4860:0:0:0:0:8888") == "US"
    assert geo.country_of("2001:4860:4860::8888".upper()) == "US"


def test_codes_are_two_upper_case_letters():
    for address in KNOWN:
        code = geo.country_of(address)
        assert len(code) == 2 and code.isascii() and code.isupper()


# -- GEOIP_DB ------------------------------------------------------------------------------------

def write_mmdb(path, database_type="GeoLite2-Country"):
    """A tiny MaxMind DB, IPv6 with the IPv4 space mapped in, as MaxMind's own files are; its
    countries differ from the registries' so that the test sees which source answered."""
    w = MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True)
    w.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "FR", "names": {"en": "France"}},
                                             "registered_country": {"iso_code": "US"}})
    # Only the registry's country (as MaxMind has for some anycast ranges).
    w.insert_network(IPSet(["77.88.8.0/24"]), {"registered_country": {"iso_code": "de"}})
    w.insert_network(IPSet(["2001:4860::/32"]), {"country": {"iso_code": "JP"}})
    # A record a private network should never get (a file may hold anything): refused anyway.
    w.insert_network(IPSet(["10.0.0.0/8", "100.64.0.0/10", "fd00::/8"]), {"country": {"iso_code": "IT"}})
    # A region rather than a country.
    w.insert_network(IPSet(["193.0.14.0/24"]), {"country": {"iso_code": "EU"}})
    w.to_db_file(str(path))
    return str(path)


def test_geoip_db_overrides_the_packaged_database(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOIP_DB", write_mmdb(tmp_path / "tiny.mmdb"))
    assert get_settings().geoip_db == str(tmp_path / "tiny.mmdb")
    assert geo.country_of("8.8.8.8") == "FR"          # `country` first
    assert geo.country_of("::ffff:8.8.8.8") == "FR"
    assert geo.country_of("77.88.8.8") == "DE"        # else `registered_country`, upper case
    assert geo.country_of("2001:4860:4860::8888") == "JP"
    assert geo.country_of("114.114.114.114") == ""    # not in the file: no fallback to another source
    for address in ("10.1.2.3", "100.64.0.1", "fd00::1", "::ffff:10.0.0.1"):
        assert geo.country_of(address) == ""
    assert geo.country_of("193.0.14.129") == ""
    for address in GARBAGE:
        assert geo.country_of(address) == ""


def test_geoip_db_ipv4_only_file(tmp_path):
    w = MMDBWriter(ip_version=4, database_type="DBIP-Country-Lite")
    w.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "SE"}})
    w.to_db_file(str(tmp_path / "v4.mmdb"))
    geo.load(str(tmp_path / "v4.mmdb"))
    assert geo.country_of("8.8.8.8") == "SE"
    assert geo.country_of("2001:4860:4860::8888") == ""  # an IPv6 address in an IPv4 file


@pytest.mark.parametrize("content", [None, b"", b"not a maxmind database" * 100])
def test_bad_geoip_db_is_refused_when_settings_are_read(tmp_path, monkeypatch, content):
    path = tmp_path / "GeoLite2-Country.mmdb"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("GEOIP_DB", str(path))
    with pytest.raises(geo.GeoDatabaseError, match=f"GEOIP_DB='{path}'"):
        get_settings()


def test_asn_database_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOIP_DB", write_mmdb(tmp_path / "asn.mmdb", database_type="GeoLite2-ASN"))
    with pytest.raises(geo.GeoDatabaseError, match="GEOIP_DB=.*no countries"):
        get_settings()


def test_bad_geoip_db_stops_the_server_at_startup_naming_the_setting(tmp_path):
    db_url = database_url()
    schema = new_schema_name("geobad")
    missing = tmp_path / "GeoLite2-City.mmdb"
    srv = Server(db_url, schema, env={"GEOIP_DB": str(missing)})
    try:
        srv.start(wait_ready=False)
        srv.proc.wait(60)
        assert srv.proc.returncode != 0
        log = srv.log()
        assert f"GEOIP_DB='{missing}' cannot be read" in log, log
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def test_good_geoip_db_lets_the_server_start(tmp_path):
    db_url = database_url()
    schema = new_schema_name("geook")
    srv = Server(db_url, schema, env={"GEOIP_DB": write_mmdb(tmp_path / "tiny.mmdb")})
    try:
        srv.start(timeout=120)
    finally:
        srv.stop()
        drop_schema(db_url, schema)
