"""dns-stale-record: the client resolves the host's name to an address nobody answers on.

Windows reads the hosts file before asking DNS and caches answers (docs/sources.md s8).
An old hosts entry, or a cached record from before the host moved, sends the client to a
stale address; the TCP handshake times out. ``ipconfig /flushdns`` (Clear-DnsClientCache)
empties the cache; connecting by IP address bypasses resolution (seed article).
"""

from __future__ import annotations

from rdplab.catalog.base import DetectContext, Fault, Finding, Fix, Placement, Symptom, finding, op

ID = "dns-stale-record"


def detect(ctx: DetectContext) -> list[Finding]:
    name, want = ctx.net.host_name.lower(), ctx.net.dial_address
    for source, table in (("hosts file", ctx.client.hosts), ("DNS cache", ctx.client.dns_cache)):
        got = table.get(name)
        if got is not None and got != want:
            return [
                finding(
                    ID,
                    "client",
                    f"{ctx.net.host_name} resolves to {got} from the {source}, not {want}",
                    name=ctx.net.host_name,
                    resolved=got,
                    expected=want,
                    source=source,
                )
            ]
    return []


FIX = Fix(
    "correct-resolution",
    "Remove the hosts entry for the host and flush the DNS cache if it holds a stale answer.",
    {
        "client": (
            op("hosts.remove", name="{host.name}"),
            op("dns.flush", name="{host.name}", expect="{dial.address}"),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="Stale DNS record for the host (hosts file or resolver cache)",
    symptom=Symptom("tcp", "The connection times out: the client dials an old address."),
    explanation=(
        "Before it can connect, the client turns the host's name into an address: first "
        "the hosts file, then its DNS cache, then the DNS server. If the host moved (new "
        "IP, VPN change) and an old answer is still in the hosts file or the cache, the "
        "client dials an address where nothing listens and times out. Check with "
        "Resolve-DnsName and Get-DnsClientCache; connecting by IP address works, which is "
        "the tell. Fix: remove the stale hosts entry and flush the cache."
    ),
    placements=(
        Placement(
            "client",
            {"client": (op("hosts.set", name="{host.name}", address="{host.stale_address}"),)},
            (FIX,),
            variant="default",
        ),
        Placement(
            "client",
            {"client": (op("dns.cache.seed", name="{host.name}", address="{host.stale_address}"),)},
            (FIX,),
            variant="cache",
        ),
    ),
    detect=detect,
    sources=(
        "Microsoft Learn: ipconfig /flushdns and Clear-DnsClientCache (docs/sources.md s8)",
        "Seed article: flush DNS; connect by IP to bypass resolution",
    ),
)
