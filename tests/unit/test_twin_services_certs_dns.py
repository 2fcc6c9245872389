"""Services, certificate stores (real X.509) and the DNS client of the twin."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rdplab.errors import OpError
from rdplab.network import Network
from rdplab.ops import Op
from rdplab.twin import Twin
from rdplab.twin.certs import RD_STORE, CertStores, make_self_signed, thumbprint
from rdplab.twin.dns import DnsClient
from rdplab.twin.services import Service, Services

TS = "TermService"


# -- services -------------------------------------------------------------------------------
@pytest.fixture
def svcs() -> Services:
    return Services(
        {
            TS: Service(TS, "Running", "Manual"),
            "Spooler": Service("Spooler", "Stopped", "Disabled"),
        }
    )


def test_start_disabled_service_is_refused(svcs: Services) -> None:
    with pytest.raises(OpError, match="disabled"):
        svcs.start("Spooler")
    assert svcs.get("spooler").status == "Stopped"


def test_start_stop_changed_flags_and_case(svcs: Services) -> None:
    assert svcs.start("termservice") is False  # already running
    assert svcs.stop("TERMSERVICE") is True
    assert svcs.stop(TS) is False
    assert not svcs.running(TS)
    assert svcs.start(TS) is True
    assert svcs.running("termservice")
    assert not svcs.running("NoSuchService")


def test_config(svcs: Services) -> None:
    assert svcs.config("Spooler", "Manual") is True
    assert svcs.config("Spooler", "Manual") is False
    assert svcs.start("Spooler") is True
    with pytest.raises(OpError, match="start_type"):
        svcs.config(TS, "Auto")
    with pytest.raises(OpError, match="no service"):
        svcs.config("Nope", "Manual")
    with pytest.raises(OpError, match="no service"):
        svcs.start("Nope")


def test_services_from_json_rejects_bad_start_type() -> None:
    with pytest.raises(OpError, match="start_type"):
        Services.from_json({TS: {"status": "Running", "start_type": "Boot"}})


def test_twin_refuses_to_start_disabled_termservice(host: Twin) -> None:
    result = host.apply(
        [
            Op("svc.config", {"name": TS, "start_type": "Disabled"}),
            Op("svc.stop", {"name": TS}),
            Op("svc.start", {"name": TS}),
        ]
    )
    assert "disabled" in (result.results[-1].error or "")
    assert host.services.running(TS)  # rolled back to before the batch


# -- certificates ---------------------------------------------------------------------------
def _rd_cert(twin: Twin) -> x509.Certificate:
    (entry,) = twin.certs.entries(RD_STORE)
    return entry.cert


def test_termservice_restart_makes_a_real_self_signed_cert_when_store_empty(
    host: Twin, apply_ok
) -> None:
    old = thumbprint(_rd_cert(host))
    apply_ok(host, [Op("cert.remove", {"store": RD_STORE, "which": "all"})])
    assert host.certs.entries(RD_STORE) == []
    result = apply_ok(host, [Op("svc.restart", {"name": TS})])
    assert "created a new self-signed certificate" in result.results[0].detail

    (entry,) = host.certs.entries(RD_STORE)
    cert = x509.load_pem_x509_certificate(entry.pem.encode())
    assert thumbprint(cert) != old
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["HOST"]
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # really self-signed
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in list(eku)
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=175) < validity < dt.timedelta(days=190)
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    assert host.certs.key_status(entry) == "ok"
    desc, why = host.tls_certificate()
    assert desc is not None and desc["thumbprint"] == thumbprint(cert), why


def test_restart_keeps_a_healthy_cert(host: Twin, apply_ok) -> None:
    old = thumbprint(_rd_cert(host))
    result = apply_ok(host, [Op("svc.restart", {"name": TS})])
    assert thumbprint(_rd_cert(host)) == old
    assert "certificate" not in result.results[0].detail


def test_corrupt_key_cert_is_kept_until_removed(host: Twin, apply_ok) -> None:
    old = thumbprint(_rd_cert(host))
    apply_ok(host, [Op("machinekeys.corrupt", {"store": RD_STORE})])
    result = apply_ok(host, [Op("svc.restart", {"name": TS})])
    assert "existing certificate kept" in result.results[0].detail
    (entry,) = host.certs.entries(RD_STORE)
    assert thumbprint(entry.cert) == old
    assert host.certs.key_status(entry) == "corrupt"
    assert host.tls_certificate()[0] is None

    apply_ok(
        host,
        [
            Op("cert.remove", {"store": RD_STORE, "which": "unusable"}),
            Op("svc.restart", {"name": TS, "if_changed": True}),
        ],
    )
    (entry,) = host.certs.entries(RD_STORE)
    assert thumbprint(entry.cert) != old
    assert host.certs.key_status(entry) == "ok"


def test_corrupt_keys_counts_only_new_corruptions() -> None:
    stores = CertStores()
    stores.add(RD_STORE, make_self_signed("A"))
    assert stores.corrupt_keys(RD_STORE) == 1
    assert stores.corrupt_keys(RD_STORE) == 0
    assert stores.corrupt_keys("My") == 0


def test_remove_unusable_only() -> None:
    stores = CertStores()
    good, bad = make_self_signed("GOOD"), make_self_signed("BAD")
    stores.add(RD_STORE, good)
    stores.add(RD_STORE, bad)
    stores.machinekeys[bad.key_file] = "corrupt"
    removed = stores.remove(RD_STORE, "unusable")
    assert removed == [thumbprint(bad.cert)]
    assert [thumbprint(e.cert) for e in stores.entries(RD_STORE)] == [thumbprint(good.cert)]
    assert bad.key_file not in stores.machinekeys  # its key file went with it
    assert stores.remove(RD_STORE, "unusable") == []


def test_remove_by_thumbprint_any_case() -> None:
    stores = CertStores()
    a, b = make_self_signed("A"), make_self_signed("B")
    stores.add(RD_STORE, a)
    stores.add(RD_STORE, b)
    assert stores.remove(RD_STORE, thumbprint(a.cert).lower()) == [thumbprint(a.cert)]
    assert [e.key_file for e in stores.entries(RD_STORE)] == [b.key_file]


def test_missing_key_file_and_expiry_make_a_cert_unusable() -> None:
    stores = CertStores()
    entry = make_self_signed("A")
    stores.entries(RD_STORE).append(entry)  # no key file
    assert stores.key_status(entry) == "missing"
    assert not stores.usable(entry)
    stores.machinekeys[entry.key_file] = "ok"
    assert stores.usable(entry)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=200)
    assert not stores.usable(entry, now=later)


def test_import_pfx_checks_thumbprint_and_is_idempotent() -> None:
    issued = Network().issued
    stores = CertStores()
    pw = issued.pfx_password
    with pytest.raises(OpError, match="does not load"):  # the password is needed
        stores.import_pfx("My", issued.pfx_b64, issued.thumbprint)
    with pytest.raises(OpError, match="thumbprint"):
        stores.import_pfx("My", issued.pfx_b64, "00" * 20, pw)
    assert stores.entries("My") == []
    assert stores.import_pfx("My", issued.pfx_b64, issued.thumbprint.lower(), pw) is True
    assert stores.import_pfx("My", issued.pfx_b64, issued.thumbprint, pw) is False
    (entry,) = stores.entries("My")
    assert stores.usable(entry)
    desc = entry.describe()
    assert desc["thumbprint"] == issued.thumbprint
    assert desc["self_signed"] is False
    assert desc["cdp"] == [Network().crl_url]
    assert desc["issuer"] == "CN=rdplab Lab CA"
    assert stores.find(issued.thumbprint.lower()) is entry


def test_import_pfx_rejects_garbage_and_keyless_pfx() -> None:
    stores = CertStores()
    with pytest.raises(OpError, match="does not load"):
        stores.import_pfx("My", base64.b64encode(b"not a pfx").decode(), "00")
    issued = Network().issued
    _, cert, _ = pkcs12.load_key_and_certificates(
        base64.b64decode(issued.pfx_b64), issued.pfx_password.encode()
    )
    assert cert is not None
    keyless = pkcs12.serialize_key_and_certificates(b"x", None, cert, None, NoEncryption())
    with pytest.raises(OpError, match="private key"):
        stores.import_pfx("My", base64.b64encode(keyless).decode(), thumbprint(cert))


# -- DNS ------------------------------------------------------------------------------------
ZONE = {"host.lab": "10.0.0.1"}


def test_resolution_order_hosts_cache_zone() -> None:
    dns = DnsClient(hosts={"host.lab": "10.0.0.3"}, cache={"host.lab": "10.0.0.2"})
    r = dns.resolve("HOST.lab", ZONE)
    assert (r.address, r.source) == ("10.0.0.3", "hosts")
    del dns.hosts["host.lab"]
    r = dns.resolve("host.lab", ZONE)
    assert (r.address, r.source) == ("10.0.0.2", "cache")
    dns.cache.clear()
    r = dns.resolve("host.lab", ZONE)
    assert (r.address, r.source) == ("10.0.0.1", "dns")


def test_dns_answers_are_cached_hosts_answers_and_misses_are_not() -> None:
    dns = DnsClient(hosts={"other.lab": "10.9.9.9"})
    dns.resolve("Host.Lab", ZONE)
    assert dns.cache == {"host.lab": "10.0.0.1"}
    r = dns.resolve("host.lab", {})  # the server forgot it; the cache still answers
    assert (r.address, r.source) == ("10.0.0.1", "cache")
    dns.resolve("other.lab", ZONE)
    r = dns.resolve("nowhere.lab", ZONE)
    assert (r.address, r.source) == (None, "none")
    assert dns.cache == {"host.lab": "10.0.0.1"}


def test_flush_if_stale() -> None:
    dns = DnsClient(hosts={"host.lab": "10.0.0.7"}, cache={"other.lab": "10.0.0.9"})
    assert dns.flush_if_stale("host.lab", "10.0.0.1") is False  # nothing cached for it
    dns.cache["host.lab"] = "10.0.0.1"
    assert dns.flush_if_stale("HOST.LAB", "10.0.0.1") is False  # cached answer is right
    assert dns.cache == {"other.lab": "10.0.0.9", "host.lab": "10.0.0.1"}
    dns.cache["host.lab"] = "10.0.0.99"
    assert dns.flush_if_stale("host.lab", "10.0.0.1") is True
    assert dns.cache == {}  # the whole cache, like ipconfig /flushdns
    assert dns.hosts == {"host.lab": "10.0.0.7"}  # the hosts file is not the cache


def test_dns_from_json_folds_case() -> None:
    dns = DnsClient.from_json({"hosts": {"Host.Lab": "1.1.1.1"}, "cache": None})
    assert dns.hosts == {"host.lab": "1.1.1.1"} and dns.cache == {}


def test_hosts_and_cache_ops_on_the_twin(client: Twin, apply_ok) -> None:
    r = apply_ok(client, [Op("dns.cache.seed", {"name": "Host.Lab", "address": "10.0.0.2"})])
    assert r.changes == 1 and client.dns.cache == {"host.lab": "10.0.0.2"}
    assert (
        apply_ok(
            client, [Op("dns.cache.seed", {"name": "host.lab", "address": "10.0.0.2"})]
        ).changes
        == 0
    )
    # a hosts entry replaces the cached answer for its name
    r = apply_ok(client, [Op("hosts.set", {"name": "HOST.LAB", "address": "10.0.0.3"})])
    assert r.changes == 1
    assert client.dns.hosts == {"host.lab": "10.0.0.3"} and "host.lab" not in client.dns.cache
    assert (
        apply_ok(client, [Op("hosts.set", {"name": "host.lab", "address": "10.0.0.3"})]).changes
        == 0
    )
    assert apply_ok(client, [Op("hosts.remove", {"name": "Host.lab"})]).changes == 1
    assert apply_ok(client, [Op("hosts.remove", {"name": "Host.lab"})]).changes == 0
    assert client.dns.hosts == {}


# -- the PFX the lab hands to cert.import (issue 7 item 12) --------------------------------------
def _der_oid(dotted: str) -> bytes:
    """The DER encoding of an OBJECT IDENTIFIER (tag, length, value)."""
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for n in parts[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        body.extend(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


PBE_SHA1_3DES = "1.2.840.113549.1.12.1.3"  # pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 App. C)
SHA1 = "1.3.14.3.2.26"
MODERN = {
    "PBES2": "1.2.840.113549.1.5.13",
    "PBKDF2": "1.2.840.113549.1.5.12",
    "SHA-256": "2.16.840.1.101.3.4.2.1",
    "AES-256-CBC": "2.16.840.1.101.3.4.1.42",
    "HMAC-SHA256": "1.2.840.113549.2.9",
}


def test_der_oid_encoding() -> None:
    assert _der_oid(SHA1) == bytes.fromhex("06052b0e03021a")
    assert _der_oid(PBE_SHA1_3DES) == bytes.fromhex("060a2a864886f70d010c0103")


def test_lab_pfx_uses_the_legacy_algorithms_every_windows_imports() -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import pkcs12

    from rdplab.twin.certs import LAB_PFX_PASSWORD, lab_ca_issued

    issued = lab_ca_issued("HOST.rdplab.test", "http://pki.rdplab.test/crl.crl")
    der = base64.b64decode(issued.pfx_b64)
    # the shrouded key bag and the encrypted certificate bag: PBE-SHA1-3DES, twice
    assert der.count(_der_oid(PBE_SHA1_3DES)) >= 2
    # MacData.mac.digestAlgorithm: SHA-1 (the MAC is the file's last structure)
    assert _der_oid(SHA1) in der[-80:]
    for name, oid in MODERN.items():
        assert _der_oid(oid) not in der, f"the PFX uses {name}"
    key, cert, _ = pkcs12.load_key_and_certificates(der, LAB_PFX_PASSWORD.encode())
    assert key is not None and cert is not None
    assert issued.pfx_password == LAB_PFX_PASSWORD
