"""firewall-blocked: the host's firewall drops the RDP port.

Windows Defender Firewall blocks inbound traffic that no rule allows, and a matching block
rule beats any allow rule (Microsoft Learn, "Windows Firewall rules"; docs/sources.md s9).
Turning Remote Desktop on enables the built-in "Remote Desktop" rule group; if that group
is disabled again, or someone adds a block rule for TCP 3389, SYNs to the listener are
dropped silently and the client times out: error 0x904, extended 0x7.
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
from rdplab.twin.firewall import GPO_STORE, address_matches, port_matches

ID = "firewall-blocked"
BLOCK_RULE = "rdplab-Block-RDP-In"


GPO_ADVICE = "blocked by Group Policy: change the GPO, not the machine"


def detect(ctx: DetectContext) -> list[Finding]:
    verdict = ctx.host.inbound(ctx.net.port, win.TS_PROGRAM, ctx.net)
    if verdict.allowed:
        return []
    rd_rules = ctx.host.fw_rules(group=win.RD_GROUP)
    disabled = [r.name for r in rd_rules if not r.enabled]
    # The facts hold the effective rules (ActiveStore) with each rule's store. A block rule,
    # or a disabled Remote Desktop rule, that Group Policy sets cannot be fixed on the machine:
    # the ops change the local store, and the next policy refresh would undo a local change.
    blocked_by = set(verdict.rules)
    by_policy = [
        r.name
        for r in ctx.host.firewall.rules
        if r.store == GPO_STORE
        and (r.name in blocked_by or (r.group == win.RD_GROUP and not r.enabled))
    ]
    summary = (
        f"inbound TCP {ctx.net.port} is blocked on the {ctx.host.firewall.active_profile} profile"
    )
    extra: dict[str, object] = {}
    # Enabled Remote Desktop rules whose RemoteAddress scope leaves the client out (Windows
    # applies a rule only to the remote addresses it lists: New-NetFirewallRule, sources s9).
    scoped_out = {
        r.name: r.remote_address
        for r in rd_rules
        if r.enabled
        and r.direction == "In"
        and r.protocol in ("Any", "TCP")
        and port_matches(r.local_port, ctx.net.port)
        and not address_matches(r.remote_address, ctx.net.peer_address, ctx.net.subnet)
    }
    if scoped_out:
        summary += f" for the client {ctx.net.peer_address}: its rule scope leaves it out"
        extra["client_address"] = ctx.net.peer_address
        extra["rd_rules_scoped_out"] = scoped_out
    if by_policy:
        summary += f"; {GPO_ADVICE}"
        extra["group_policy_rules"] = by_policy
    return [
        finding(
            ID,
            "host",
            summary,
            verdict=verdict.reason,
            block_rules=verdict.rules,
            disabled_rd_rules=disabled,
            **extra,
        )
    ]


FIX = Fix(
    "enable-rd-rules",
    "Enable the 'Remote Desktop' rule group and remove block rules on the RDP port.",
    {
        "host": (
            op("fw.rule.set", match={"group": win.RD_GROUP}, enabled=True),
            op(
                "fw.rule.remove",
                match={
                    "direction": "In",
                    "action": "Block",
                    "protocol": "TCP",
                    "local_port": "{port}",
                },
            ),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="Host firewall blocks the Remote Desktop port",
    symptom=Symptom("tcp", "The connection times out: no answer to the TCP handshake."),
    explanation=(
        "The client sends its TCP SYN to port 3389 and hears nothing back, because the "
        "host's Windows Defender Firewall drops the packet. Two ways get you here: the "
        "built-in 'Remote Desktop' rules were disabled (by hand, by a GPO, or by a "
        "hardening script), or a block rule covers TCP 3389, and a block rule always wins "
        "over an allow rule. Check with Get-NetFirewallRule -DisplayGroup 'Remote Desktop' "
        "and Test-NetConnection HOST -Port 3389 from the client. The fix turns the group "
        "back on and removes the block rule, and touches no other rule."
    ),
    placements=(
        Placement(
            "host",
            {"host": (op("fw.rule.set", match={"group": win.RD_GROUP}, enabled=False),)},
            (FIX,),
            variant="default",
        ),
        Placement(
            "host",
            {
                "host": (
                    op(
                        "fw.rule.add",
                        rule={
                            "name": BLOCK_RULE,
                            "display_name": "Block RDP (rdplab)",
                            "direction": "In",
                            "action": "Block",
                            "protocol": "TCP",
                            "local_port": "3389",
                        },
                    ),
                )
            },
            (FIX,),
            variant="block-rule",
        ),
    ),
    detect=detect,
    sources=(
        "Microsoft Learn: Windows Firewall rules (block beats allow, per-profile defaults)",
        "Default rule definitions RemoteDesktop-UserMode-In-TCP/UDP (docs/sources.md s9)",
        "Seed article: check the firewall first",
    ),
)
