"""Packets crossing the lab router, as a ladder of events a person reads.

Capture: ``tcpdump -i any -y LINUX_SLL2`` runs in the router namespace (``ip netns exec``)
and writes pcap to a file this process opened. The cooked-v2 link type records, for each
packet, the interface index and whether the router received or sent it, which is what
tells a forwarded packet (in on one interface, out on the other) from one the router
dropped (in, never out) or made itself (out only). tcpdump is used rather than an
AF_PACKET socket of our own: kernel timestamps, a BPF filter and a ring buffer, with
nothing to get wrong. The pcap is parsed with dpkt (PyPI; pure Python, has SLL2): IP,
TCP, UDP and ICMP headers come from the library, only the first bytes of a payload (TPKT,
X.224 code, TLS record and handshake type) are looked at here.

Ladder: each packet the router received is matched to the packet it sent on the other
side (same IP id, TCP sequence/acknowledgement, flags and length: NAT rewrites addresses
and ports, not these), giving one event with the sender's source and the receiver's
destination (``client->host``). A packet received and never sent on is *not forwarded*;
when it was larger than the MTU of the link it was headed for, it is labelled ``dropped:
too big for the link (M)``. A packet sent with no matching received one came from the
router (``router->host``: an ICMP fragmentation-needed, a DNS answer). Segments whose
sequence number was already seen are marked as retransmissions.

``server_flight_size`` measures the bytes a TLS server sends in its first flight for a
given certificate, and ``chain_identity`` makes a CA-issued certificate with its issuing
CA, whose flight (about 2.1 KB) does not fit a tunnel's 1400-byte MTU.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt  # type: ignore[import-untyped]

from rdplab.netlab.run import NetlabError, ns_argv, require_program, sh, stop_pids
from rdplab.serve import Identity

SNAPLEN = 256  # headers plus the first payload bytes: enough to name every message
MATCH_WINDOW = 0.5  # seconds within which a forwarded packet leaves the router
_SYN, _FIN, _RST, _ACK = dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST, dpkt.tcp.TH_ACK
_OUTGOING = 4  # SLL2 packet type: sent by this host


@dataclass(frozen=True)
class LadderEvent:
    """One packet on the ladder. ``t``: seconds since the capture started; ``direction``:
    roles (``client->host``); ``size``: IP length; ``note``: how the router handled it
    (``forwarded``, ``switched`` on the LAN bridge, ``to the router``, ``from the router``,
    ``not forwarded ...``) or, for a
    dropped packet, what it was; ``retransmission``: its sequence number was seen before."""

    t: float
    src: str
    dst: str
    label: str
    direction: str
    size: int
    note: str = ""
    retransmission: bool = False

    def __str__(self) -> str:
        again = " [retransmission]" if self.retransmission else ""
        note = f" ({self.note})" if self.note else ""
        return (
            f"{self.t:8.3f}  {self.direction:<15} {self.src:>15} -> {self.dst:<15}"
            f" {self.label}{again}{note}"
        )


def render(events: list[LadderEvent]) -> str:
    return "\n".join(str(e) for e in events)


@dataclass
class _Packet:
    t: float
    ifindex: int
    outgoing: bool
    ip: Any  # dpkt.ip.IP

    @property
    def src(self) -> str:
        return _addr(self.ip.src)

    @property
    def dst(self) -> str:
        return _addr(self.ip.dst)


def _addr(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


@dataclass(frozen=True)
class View:
    """What the ladder needs to know about the lab: which captured interface is on which
    side, who holds an address, which side an address is on and that side's MTU, and the
    router's port forwards (port -> "address:port")."""

    sides: Mapping[str, str]  # interface name -> "client" | "lan"
    role_of: Callable[[str], str]
    side_of: Callable[[str], str]
    mtu: Mapping[str, int]  # side -> MTU of the router's link toward it
    forwards: Mapping[int, str] = field(default_factory=dict)
    #: how a packet that crossed is described: routed ("forwarded") or bridged ("switched")
    crossed: str = "forwarded"


class Capture:
    """A running capture on the router; ``stop()`` returns the ladder."""

    def __init__(self, ns: str, view: View) -> None:
        require_program("tcpdump", "tcpdump")
        self.ns = ns
        self.view = view
        self.events: list[LadderEvent] = []
        self._dir = Path(tempfile.mkdtemp(prefix="rdplab-capture-"))
        self.pcap = self._dir / "router.pcap"
        self._err = self._dir / "tcpdump.err"
        self._index = _ifindex(ns)
        self._proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self, timeout: float = 5.0) -> Capture:
        argv = ns_argv(
            self.ns,
            ["tcpdump", "-i", "any", "-y", "LINUX_SLL2", "-n", "-U", "--immediate-mode",
             "-s", str(SNAPLEN), "-w", "-", "ip and not ip multicast"],
        )  # fmt: skip
        with open(self.pcap, "wb") as out, open(self._err, "wb") as err:
            self._proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.started = time.time()
        deadline = time.monotonic() + timeout
        for _ in range(1000):  # tcpdump says "listening on" once its socket is bound
            if b"listening on" in self._err.read_bytes():
                return self
            if self._proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        why = self._err.read_text(errors="replace").strip()
        self._kill()
        raise NetlabError(f"tcpdump in {self.ns} did not start: {why or 'no output'}")

    def stop(self) -> list[LadderEvent]:
        """Stop tcpdump (bounded) and return the ladder of what it saw."""
        if self._proc is None:
            return self.events
        time.sleep(0.05)  # the last packets' way through the ring buffer
        self._kill()
        try:
            packets = read_pcap(self.pcap, self.started)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        names = {index: name for index, name in self._index.items() if name in self.view.sides}
        self.events = ladder(packets, names, self.view)
        return self.events

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            stop_pids([proc.pid], grace=0)
            proc.wait(5)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ifindex(ns: str) -> dict[int, str]:
    import json

    links = json.loads(sh(["ip", "-n", ns, "-j", "link"]).stdout)
    return {int(link["ifindex"]): str(link["ifname"]) for link in links}


def read_pcap(path: Path, started: float) -> list[_Packet]:
    """The IPv4 packets of a LINUX_SLL2 pcap, with times relative to ``started``."""
    packets: list[_Packet] = []
    if not path.exists() or path.stat().st_size == 0:
        return packets
    with open(path, "rb") as f:
        try:
            reader = dpkt.pcap.Reader(f)
        except ValueError:  # tcpdump wrote no header: nothing was captured
            return packets
        for ts, buf in reader:
            try:
                sll = dpkt.sll2.SLL2(buf)
            except dpkt.UnpackError:
                continue
            if not isinstance(sll.data, dpkt.ip.IP):
                continue
            packets.append(
                _Packet(float(ts) - started, int(sll.intindex), sll.type == _OUTGOING, sll.data)
            )
    return packets


# -- the ladder --------------------------------------------------------------------------------
def _payload_len(ip: Any) -> int:
    inner = ip.data
    if isinstance(inner, dpkt.tcp.TCP):
        return max(0, int(ip.len) - int(ip.hl) * 4 - int(inner.off) * 4)
    if isinstance(inner, dpkt.udp.UDP):
        return max(0, int(inner.ulen) - 8)
    return max(0, int(ip.len) - int(ip.hl) * 4)


def _key(ip: Any) -> tuple[Any, ...]:
    inner = ip.data
    if isinstance(inner, dpkt.tcp.TCP):
        return ("tcp", ip.id, inner.seq, inner.ack, inner.flags, _payload_len(ip))
    if isinstance(inner, dpkt.icmp.ICMP):
        return ("icmp", ip.id, inner.type, inner.code, int(ip.len))
    return (int(ip.p), ip.id, int(ip.len))


def ladder(packets: list[_Packet], names: Mapping[int, str], view: View) -> list[LadderEvent]:
    """Merge the router's received and sent packets into one event per packet."""
    seen = [p for p in packets if p.ifindex in names]
    sent: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(seen):
        if p.outgoing:
            sent.setdefault(_key(p.ip), []).append(i)
    used: set[int] = set()
    rows: list[tuple[float, str, str, _Packet, str]] = []
    for p in seen:
        if p.outgoing:
            continue
        match = next(
            (
                i
                for i in sent.get(_key(p.ip), [])
                if i not in used
                and seen[i].ifindex != p.ifindex
                and p.t - 0.001 <= seen[i].t <= p.t + MATCH_WINDOW
            ),
            None,
        )
        if match is not None:
            used.add(match)
            rows.append((p.t, p.src, seen[match].dst, p, view.crossed))
        else:
            rows.append((p.t, p.src, p.dst, p, _not_forwarded(p, view)))
    for i, p in enumerate(seen):
        if p.outgoing and i not in used:
            rows.append((p.t, p.src, p.dst, p, "from the router"))
    rows.sort(key=lambda row: row[0])
    conns = _Connections()
    events: list[LadderEvent] = []
    for t, src, dst, p, note in rows:
        label, again = conns.label(p.ip)
        if note == "too big":
            mtu = view.mtu.get(view.side_of(dst), 0)
            label, note = f"dropped: too big for the link ({mtu})", label
        direction = f"{view.role_of(src)}->{view.role_of(dst)}"
        events.append(
            LadderEvent(round(t, 6), src, dst, label, direction, int(p.ip.len), note, again)
        )
    return events


def _not_forwarded(p: _Packet, view: View) -> str:
    """Why a received packet never left: too big for its next link, or it was for the
    router (delivered or dropped there), or its DNAT target never answered ARP."""
    if view.role_of(p.dst) == "router":
        inner = p.ip.data
        if isinstance(inner, dpkt.tcp.TCP) and inner.dport in view.forwards:
            return f"not forwarded: DNAT to {view.forwards[inner.dport]} reached no one"
        return "to the router"
    if int(p.ip.len) > view.mtu.get(view.side_of(p.dst), 1 << 16):
        return "too big"
    return "not forwarded"


@dataclass
class _Conn:
    tls: bool = False  # the X.224 Confirm was seen: what follows is TLS
    client_after_hello: bool = False
    hello: bool = False
    sent: set[tuple[bool, int, int, int]] = field(default_factory=set)


class _Connections:
    """TCP connections by the initiator's port (NAT keeps it), to label and spot
    retransmissions."""

    def __init__(self) -> None:
        self.by_port: dict[int, _Conn] = {}

    def label(self, ip: Any) -> tuple[str, bool]:
        inner = ip.data
        if isinstance(inner, dpkt.icmp.ICMP):
            return _icmp_label(inner), False
        if isinstance(inner, dpkt.udp.UDP):
            return _udp_label(inner, _payload_len(ip)), False
        if not isinstance(inner, dpkt.tcp.TCP):
            return f"IP protocol {ip.p} ({int(ip.len)} bytes)", False
        flags, size = int(inner.flags), _payload_len(ip)
        if flags & _SYN and not flags & _ACK:
            self.by_port.setdefault(inner.sport, _Conn())
        if inner.sport in self.by_port:
            conn, from_client = self.by_port[inner.sport], True
        else:
            conn, from_client = self.by_port.setdefault(inner.dport, _Conn()), False
        again = False
        if flags & (_SYN | _FIN | _RST) or size:
            sig = (from_client, int(inner.seq), size, flags & (_SYN | _FIN | _RST))
            again = sig in conn.sent
            conn.sent.add(sig)
        if flags & _RST:
            return "RST", again
        if flags & _SYN:
            return ("SYN-ACK" if flags & _ACK else "SYN"), again
        if size:
            return _data_label(conn, bytes(inner.data), size, from_client), again
        return ("FIN" if flags & _FIN else "ACK"), again


def _data_label(conn: _Conn, data: bytes, size: int, from_client: bool) -> str:
    if len(data) >= 6 and data[0] == 3 and data[1] == 0:
        code = data[5] & 0xF0
        if code == 0xE0:
            return "X.224 Connection Request"
        if code == 0xD0:
            conn.tls = True
            return "X.224 Connection Confirm"
    if len(data) >= 6 and data[0] == 0x16 and data[5] == 1 and from_client:
        conn.hello = True
        return "TLS ClientHello"
    if from_client and conn.hello:
        conn.client_after_hello = True
    if not from_client and conn.tls and conn.hello and not conn.client_after_hello:
        return f"TLS server flight ({size} bytes)"
    if data[:1] in (b"\x14", b"\x15", b"\x16", b"\x17"):
        return f"TLS data ({size} bytes)"
    return f"data ({size} bytes)"


def _icmp_label(icmp: Any) -> str:
    if icmp.type == dpkt.icmp.ICMP_UNREACH and icmp.code == dpkt.icmp.ICMP_UNREACH_NEEDFRAG:
        return f"ICMP fragmentation needed (mtu {icmp.data.mtu})"
    return f"ICMP type {icmp.type} code {icmp.code}"


def _udp_label(udp: Any, size: int) -> str:
    if 53 not in (udp.sport, udp.dport):
        return f"UDP {udp.sport}->{udp.dport} ({size} bytes)"
    from dnslib import QTYPE, DNSRecord  # type: ignore[import-untyped]

    try:
        record = DNSRecord.parse(bytes(udp.data))
    except Exception:  # a truncated or odd packet: say what it is
        return f"DNS ({size} bytes)"
    name = str(record.q.qname).rstrip(".")
    if not record.header.qr:
        return f"DNS query {name}"
    answers = [str(rr.rdata) for rr in record.rr if rr.rtype == QTYPE.A]
    return f"DNS answer {name} -> {', '.join(answers) or 'no address'}"


# -- the TLS flight the ladder looks for -------------------------------------------------------
def server_flight_size(identity: Identity) -> int:
    """Bytes a TLS server (Python's ssl, as ``RDPServer``) sends in answer to a ClientHello
    from ``rdplab.probe`` when it presents ``identity``: the flight a too-small path MTU
    blocks. Measured in memory, no network."""
    with tempfile.TemporaryDirectory(prefix="rdplab-flight-") as d:
        cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
        cert.write_bytes(identity.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(identity.key_pem)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    with suppress(ssl.SSLWantReadError):  # it waits for the server's answer
        client.do_handshake()
    s_in.write(c_out.read())
    with suppress(ssl.SSLWantReadError):  # it waits for the client's Finished
        server.do_handshake()
    return len(s_out.read())


def chain_identity(common_name: str = "host.rdplab.test") -> Identity:
    """A server certificate (RSA 2048) issued by an enterprise CA, served with the CA
    certificate: a Windows host with a certificate from its domain's PKI. Its TLS flight is
    about 2.1 KB, more than one full-size segment; the stand-in self-signed EC certificate
    of ``make_identity`` gives about 660 bytes, which fits any plausible tunnel MTU."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(65537, 2048)
    key = rsa.generate_private_key(65537, 2048)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "test"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "rdplab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "rdplab Issuing CA"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=180))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Identity(
        leaf.public_bytes(pem) + ca.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        f"a certificate CN={common_name} issued by rdplab Issuing CA (chain of 2)",
    )
