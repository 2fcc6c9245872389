"""firewall-websocket-blocked: RDP over WebSocket cannot pass the firewall.

The "Remote Desktop (WebSocket)" group holds RemoteDesktop-In-TCP-WS (TCP 3387) and
RemoteDesktop-In-TCP-WSS (TCP 3392) (docs/sources.md s9). Clients that carry RDP over
WebSocket need them open on the host, and need their own firewall to let the connection
out. The seed article's advice: allow Remote Desktop (WebSocket) on both machines.
"""

from __future__ import annotations

from rdplab import windows as win
from rdplab.catalog.base import (
    DetectContext,
    Fault,
    Finding,
    Fix,
    Placement,
    Symptom,
    finding,
    op,
)

ID = "firewall-websocket-blocked"
CLIENT_BLOCK_RULE = "rdplab-Block-RDP-WebSocket-Out"
PORTS = ",".join(str(p) for p in win.WEBSOCKET_PORTS)


def detect(ctx: DetectContext) -> list[Finding]:
    found = []
    host_blocked = {p: ctx.host.inbound(p, win.WS_PROGRAM, ctx.net) for p in win.WEBSOCKET_PORTS}
    if any(not v.allowed for v in host_blocked.values()):
        found.append(
            finding(
                ID,
                "host",
                "inbound RDP WebSocket ports are blocked on the host",
                verdict={p: v.reason for p, v in host_blocked.items()},
                disabled_ws_rules=[
                    r.name for r in ctx.host.fw_rules(group=win.RD_WS_GROUP) if not r.enabled
                ],
            )
        )
    client_blocked = {p: ctx.client.outbound(p) for p in win.WEBSOCKET_PORTS}
    if any(not v.allowed for v in client_blocked.values()):
        found.append(
            finding(
                ID,
                "client",
                "outbound RDP WebSocket ports are blocked on the client",
                verdict={p: v.reason for p, v in client_blocked.items()},
            )
        )
    return found


HOST_FIX = Fix(
    "enable-ws-rules",
    "Enable the 'Remote Desktop (WebSocket)' group and remove inbound block rules on 3387/3392.",
    {
        "host": (
            op("fw.rule.set", match={"group": win.RD_WS_GROUP}, enabled=True),
            op("fw.rule.remove", match={"direction": "In", "action": "Block", "local_port": PORTS}),
        )
    },
)
CLIENT_FIX = Fix(
    "remove-ws-out-block",
    "Remove the client's outbound block rules on the RDP WebSocket ports.",
    {
        "client": (
            op(
                "fw.rule.remove",
                match={"direction": "Out", "action": "Block", "remote_port": PORTS},
            ),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="Remote Desktop (WebSocket) blocked by the firewall",
    symptom=Symptom("tcp", "A WebSocket-transport client times out connecting to 3387/3392."),
    explanation=(
        "Some Remote Desktop clients carry RDP inside a WebSocket instead of on TCP 3389. "
        "Their traffic uses the 'Remote Desktop (WebSocket)' firewall rules: TCP 3387 "
        "(WS) and 3392 (WSS). Windows ships these rules disabled, so a host that was "
        "enabled only through the classic 'Remote Desktop' group still drops WebSocket "
        "clients; and a client whose own firewall blocks outbound 3387/3392 never gets "
        "there either. Classic TCP 3389 connections keep working, which is what makes "
        "this one confusing. Fix it on the side where it is broken: enable the group on "
        "the host, remove the outbound block on the client."
    ),
    placements=(
        Placement(
            "host",
            {"host": (op("fw.rule.set", match={"group": win.RD_WS_GROUP}, enabled=False),)},
            (HOST_FIX,),
        ),
        Placement(
            "client",
            {
                "client": (
                    op(
                        "fw.rule.add",
                        rule={
                            "name": CLIENT_BLOCK_RULE,
                            "display_name": "Block RDP WebSocket out (rdplab)",
                            "direction": "Out",
                            "action": "Block",
                            "protocol": "TCP",
                            "remote_port": PORTS,
                        },
                    ),
                )
            },
            (CLIENT_FIX,),
        ),
    ),
    detect=detect,
    sources=(
        "Default rule definitions RemoteDesktop-In-TCP-WS (3387) / -WSS (3392), shipped "
        "disabled (docs/sources.md s9)",
        "Seed article: allow Remote Desktop (WebSocket) on both client and host",
    ),
    transport="websocket",
)
