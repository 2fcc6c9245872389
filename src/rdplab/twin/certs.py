"""Certificate stores and MachineKeys, with real X.509 certificates (``cryptography``).

TermService keeps its self-signed certificate in the LocalMachine "Remote Desktop" store,
its private key as a file under %ProgramData%\\Microsoft\\Crypto\\RSA\\MachineKeys
(docs/sources.md, section 6). The twin keeps the same split: a certificate entry points at
a key file, and the key file can be healthy, corrupt or missing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rdplab.errors import OpError

RD_STORE = "Remote Desktop"
SELF_SIGNED_VALIDITY = dt.timedelta(days=182)  # about six months, renewed by TermService
_POOL_SIZE = 4


@lru_cache(maxsize=_POOL_SIZE)
def _pooled_key(slot: int) -> rsa.RSAPrivateKey:
    # RSA key generation costs tens of milliseconds (sometimes hundreds); the twin reuses a
    # small pool so the whole scenario matrix stays fast. Thumbprints still differ (serial
    # and dates). The pool is kept between sessions (_key_cache): these are the simulated
    # machines' keys, worth nothing outside the twin (docs/scale.md).
    cache = _key_cache()
    if cache is None:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = cache / f"twin-key-{slot}.pem"
    try:
        key = serialization.load_pem_private_key(
            path.read_bytes(), None, unsafe_skip_rsa_key_validation=True
        )
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048:
            return key
    except (OSError, ValueError, TypeError):
        pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tmp.replace(path)  # atomic: parallel workers never read half a key
    except OSError:
        pass  # no cache: the next session generates again
    return key


def _key_cache() -> Path | None:
    """``$RDPLAB_KEY_CACHE``, else ``rdplab-keys-<uid>`` in the system's temporary directory
    (not under the home directory: a tool run with HOME pointing at a project would leave
    the keys there). None (no cache) when that directory belongs to another user."""
    if os.environ.get("RDPLAB_KEY_CACHE"):
        return Path(os.environ["RDPLAB_KEY_CACHE"])
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"rdplab-keys-{uid}"
    try:
        if path.exists() and path.stat().st_uid != uid:
            return None  # someone else's directory: never read, never written
    except OSError:
        pass
    return path


_slots = itertools.count()


def _next_key() -> rsa.RSAPrivateKey:
    return _pooled_key(next(_slots) % _POOL_SIZE)


def machine_key(cert: x509.Certificate) -> rsa.RSAPrivateKey | None:
    """The private key behind a twin certificate, when this process made it: every twin key
    comes from the pool (what the twin's MachineKeys file stands for). None otherwise (a
    twin built in another process)."""
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        return None
    numbers = public.public_numbers()
    for slot in range(_POOL_SIZE):
        key = _pooled_key(slot)
        if key.public_key().public_numbers() == numbers:
            return key
    return None


def thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def _build(
    subject: str,
    issuer: x509.Name | None,
    signer: rsa.RSAPrivateKey,
    key: rsa.RSAPrivateKey,
    days: dt.timedelta,
    ca: bool = False,
    cdp: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + days)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
    if cdp:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(cdp)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@dataclass
class CertEntry:
    """A certificate in a store, with the name of its MachineKeys file."""

    pem: str
    key_file: str

    @property
    def cert(self) -> x509.Certificate:
        return _parse(self.pem)

    def describe(self) -> dict[str, Any]:
        c = self.cert
        cdp = crl_urls(c)
        try:
            eku = [
                o.dotted_string
                for o in c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            ]
        except x509.ExtensionNotFound:
            eku = []
        return {
            "thumbprint": thumbprint(c),
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "self_signed": c.subject == c.issuer,
            "eku": eku,
            "cdp": cdp,
            "key_file": self.key_file,
        }


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The CRL locations in a certificate's CRL Distribution Points extension (RFC 5280
    4.2.1.13): where a client downloads the revocation list to check this certificate."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(n.value)
        for dp in points
        for n in (dp.full_name or [])
        if isinstance(n, x509.UniformResourceIdentifier)
    ]


@lru_cache(maxsize=256)
def _parse(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _key_file_name(cert: x509.Certificate) -> str:
    # CAPI key containers are named by a hash plus the machine GUID; any stable unique
    # name serves the twin.
    return f"{thumbprint(cert)[:32].lower()}_machineguid"


def make_self_signed(computer_name: str) -> CertEntry:
    key = _next_key()
    cert = _build(computer_name, None, key, key, SELF_SIGNED_VALIDITY)
    return CertEntry(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_file_name(cert))


# The lab's PFX password. It protects nothing (it travels with the PFX and is printed here);
# PKCS#12 needs one for the legacy algorithms below.
LAB_PFX_PASSWORD = "rdplab-lab-pfx"


def legacy_pfx(
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    cas: list[x509.Certificate],
    password: str = LAB_PFX_PASSWORD,
) -> bytes:
    """A PKCS#12 file for every Windows the lab targets: keys and certificates encrypted with
    pbeWithSHAAnd3-KeyTripleDES-CBC and an HMAC-SHA1 MAC, what Windows itself writes by default.
    Windows has PBES2 (AES-256, SHA-256 for the KDF and the MAC) for PFX files only from
    Windows 10 1709 / Server 2019 (Microsoft Learn, PKCS12_PBES2_EXPORT_PARAMS), which
    Server 2016 predates; whether 2016 can read such a file is not stated there, so the lab
    does not rely on it (docs/agent-review.md, issue 7 item 12)."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(b"rdplab", key, cert, cas, encryption)


@dataclass(frozen=True)
class IssuedCert:
    """A lab-CA-issued server certificate, ready for cert.import."""

    pfx_b64: str
    thumbprint: str
    cdp: str
    pfx_password: str = LAB_PFX_PASSWORD


@lru_cache(maxsize=16)
def lab_ca_issued(subject: str, cdp: str) -> IssuedCert:
    """A server certificate for subject issued by the lab CA, with a CRL distribution point."""
    ca_key = _pooled_key(0)
    ca_cert = _build("rdplab Lab CA", None, ca_key, ca_key, dt.timedelta(days=3650), ca=True)
    key = _pooled_key(1)
    cert = _build(subject, ca_cert.subject, ca_key, key, dt.timedelta(days=365), cdp=cdp)
    pfx = legacy_pfx(key, cert, [ca_cert])
    return IssuedCert(base64.b64encode(pfx).decode(), thumbprint(cert), cdp)


@lru_cache(maxsize=8)
def _load_pfx(pfx_b64: str, password: str | None) -> tuple[Any, x509.Certificate | None]:
    """A PFX's key and certificate. Decoding one costs ~0.1 s (PKCS#12's key derivation);
    the lab imports the same PFX in every scenario that needs it, so the parse is kept."""
    secret = password.encode() if password else None
    key, cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(pfx_b64), secret)
    return key, cert


@dataclass
class CertStores:
    stores: dict[str, list[CertEntry]] = field(default_factory=dict)
    machinekeys: dict[str, str] = field(default_factory=dict)  # key file -> ok | corrupt

    def entries(self, store: str) -> list[CertEntry]:
        return self.stores.setdefault(store, [])

    def key_status(self, entry: CertEntry) -> str:
        return self.machinekeys.get(entry.key_file, "missing")

    def usable(self, entry: CertEntry, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        c = entry.cert
        return (
            self.key_status(entry) == "ok"
            and c.not_valid_before_utc <= now <= c.not_valid_after_utc
        )

    def find(self, thumb: str) -> CertEntry | None:
        for entries in self.stores.values():
            for e in entries:
                if thumbprint(e.cert) == thumb.upper():
                    return e
        return None

    # -- ops --------------------------------------------------------------------------------
    def add(self, store: str, entry: CertEntry) -> None:
        self.entries(store).append(entry)
        self.machinekeys[entry.key_file] = "ok"

    def import_pfx(
        self, store: str, pfx_b64: str, expect_thumbprint: str, password: str | None = None
    ) -> bool:
        try:
            key, cert = _load_pfx(pfx_b64, password)
        except ValueError as exc:
            raise OpError(f"cert.import: the PFX does not load ({exc})") from None
        if cert is None or key is None:
            raise OpError("cert.import: the PFX holds no certificate with a private key")
        if thumbprint(cert) != expect_thumbprint.upper():
            raise OpError("cert.import: the PFX's thumbprint is not the one the op names")
        if any(thumbprint(e.cert) == thumbprint(cert) for e in self.entries(store)):
            return False
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.add(store, CertEntry(pem, _key_file_name(cert)))
        return True

    def remove(self, store: str, which: str) -> list[str]:
        removed = []
        keep = []
        for e in self.entries(store):
            hit = (
                which == "all"
                or (which == "unusable" and not self.usable(e))
                or thumbprint(e.cert) == which.upper()
            )
            if hit:
                removed.append(thumbprint(e.cert))
                self.machinekeys.pop(e.key_file, None)
            else:
                keep.append(e)
        self.stores[store] = keep
        return removed

    def corrupt_keys(self, store: str) -> int:
        n = 0
        for e in self.entries(store):
            if self.machinekeys.get(e.key_file) != "corrupt":
                self.machinekeys[e.key_file] = "corrupt"
                n += 1
        return n

    # -- snapshot ---------------------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        return {
            store: [dict(e.describe(), key=self.key_status(e)) for e in entries]
            for store, entries in sorted(self.stores.items())
        }

    def snapshot(self) -> dict[str, Any]:
        return {"stores": self.facts(), "machinekeys": dict(sorted(self.machinekeys.items()))}
