"""The lab's DNS: a dnslib server (UDP) answering A records from a zone, in the router.

A stale or missing record is one of the 0x904 causes the lab plays (a moved DHCP lease
that DNS still points at the old address): the zone is the plan's ``dns_zone``, answered
authoritatively; other names get NXDOMAIN, so a lookup never leaves the lab for a real
resolver. The server's socket is made inside the router namespace (``NetLab`` builds it in
a setns worker thread) and its serving thread is started from there too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]
from dnslib.server import DNSServer  # type: ignore[import-untyped]

TTL = 60


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


class ZoneResolver:
    """dnslib resolver interface (``resolve(request, handler) -> reply``) for a fixed zone."""

    def __init__(self, zone: Mapping[str, str]) -> None:
        self.zone = {_norm(k): v for k, v in zone.items()}
        self.asked: list[str] = []  # names asked, in order (tests read them)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = _norm(str(request.q.qname))
        self.asked.append(qname)
        if qname not in self.zone:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(self.zone[qname]), ttl=TTL))
        return reply


class _Quiet:
    """A dnslib logger that logs nothing (the default prints every query)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class LabDNS:
    """A UDP DNS server on ``address``:``port``. Construct and ``start`` it inside the
    namespace it serves (its socket is bound where it is made)."""

    def __init__(self, zone: Mapping[str, str], address: str, port: int = 53) -> None:
        self.resolver = ZoneResolver(zone)
        self.address = address
        self._server = DNSServer(self.resolver, address=address, port=port, logger=_Quiet())
        self.port = int(self._server.server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> LabDNS:
        # socketserver polls for shutdown every poll_interval: a bounded stop
        self._thread = threading.Thread(
            target=self._server.server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"lab-dns-{self.address}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server.server_close()


def query(server: str, name: str, port: int = 53, timeout: float = 2.0) -> str | None:
    """Ask ``server`` for the A record of ``name`` (from the caller's namespace): the
    first address, or None (NXDOMAIN, no A record)."""
    answer = DNSRecord.parse(DNSRecord.question(name, "A").send(server, port, timeout=timeout))
    for rr in answer.rr:
        if rr.rtype == QTYPE.A:
            return str(rr.rdata)
    return None
