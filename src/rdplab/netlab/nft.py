"""The lab's nftables rulesets, as text, applied with ``nft -f -`` inside a namespace.

Text rather than a library: the ruleset is what a person reads in ``nft list ruleset``
inside ``rdplab netlab shell router``, and ``nft`` checks it atomically (a ruleset that
does not parse changes nothing). Each table is ``ip rdplab_<run>`` and each rule that
matters carries a ``comment "rdplab <run> ..."`` and a counter, so a test can read how
many packets a rule saw (``counters``).

Router (what a small office router does):

* prerouting: the port forwards, DNAT from the router's client-facing address;
* forward: policy drop; established/related, LAN->client-side and DNATed connections
  accepted (``vpn``: both directions routed, no NAT); the MSS of SYNs clamped when asked;
  ICMP fragmentation-needed dropped when ``icmp_frag_needed`` is False (both the router's
  own, in output, and forwarded ones);
* input: ``outside`` drops everything unsolicited from the WAN except DNS to the lab
  resolver, so a port without a forward times out instead of being refused;
* output: on ``outside`` the WAN gets no ICMP destination-unreachable (stealth, as home
  routers are): a forward to a LAN address nobody holds (a moved lease) ends in the
  router's failed ARP, which would otherwise answer the client with host-unreachable;
* postrouting: ``outside`` masquerades LAN-originated traffic to the WAN.

Host: inbound TCP to ``host_drop_ports`` is dropped (not rejected), as the Windows
firewall does with a blocked port.
"""

from __future__ import annotations

import json
from typing import Any

from rdplab.netlab.run import ns_argv, sh
from rdplab.netlab.topology import Links, NetPlan, addressing


def table(run_id: str) -> str:
    return f"rdplab_{run_id}"


def _rule(run_id: str, match: str, action: str, why: str) -> str:
    """One rule: the counter goes before the action (nothing after a verdict runs)."""
    return f'        {match} counter {action} comment "rdplab {run_id} {why}"'


def router_ruleset(plan: NetPlan, links: Links) -> str:
    """The router namespace's ruleset for ``plan``."""
    r = plan.run_id
    wan, lan_if = links.router_client, links.bridge
    ad = addressing(plan)
    routed = plan.client_site != "lan"
    pre: list[str] = []
    if routed:
        for f in plan.forwards:
            pre.append(
                _rule(
                    r,
                    f'iifname "{wan}" ip daddr {ad.router_client_address} tcp dport {f.port}',
                    f"dnat to {f.to_address}:{f.to_port}",
                    f"forward {f.port}",
                )
            )
    post: list[str] = []
    if plan.client_site == "outside":
        post.append(
            _rule(r, f'oifname "{wan}" ip saddr {plan.lan_subnet}', "masquerade", "masquerade")
        )
    frag_needed = "icmp type destination-unreachable icmp code frag-needed"
    fwd: list[str] = []
    out: list[str] = []
    if plan.mss_clamp is not None:
        m = plan.mss_clamp
        fwd.append(
            _rule(
                r,
                f"tcp flags syn tcp option maxseg size > {m}",
                f"tcp option maxseg size set {m}",
                "mss clamp",
            )
        )
    if not plan.icmp_frag_needed:
        fwd.append(_rule(r, frag_needed, "drop", "frag-needed dropped"))
        out.append(_rule(r, frag_needed, "drop", "frag-needed dropped"))
    fwd.append(_rule(r, "ct state established,related", "accept", "established"))
    fwd.append(_rule(r, f'iifname "{lan_if}" oifname "{lan_if}"', "accept", "lan"))
    if plan.client_site == "outside":
        fwd.append(_rule(r, f'iifname "{wan}" ct status dnat', "accept", "forwarded"))
        fwd.append(_rule(r, f'iifname "{lan_if}" oifname "{wan}"', "accept", "lan to wan"))
    elif plan.client_site == "vpn":
        fwd.append(_rule(r, f'iifname "{wan}" oifname "{lan_if}"', "accept", "vpn to lan"))
        fwd.append(_rule(r, f'iifname "{lan_if}" oifname "{wan}"', "accept", "lan to vpn"))
    inp: list[str] = []
    if plan.client_site == "outside":
        inp.append(_rule(r, "ct state established,related", "accept", "established"))
        inp.append(_rule(r, f'iifname "{wan}" udp dport 53', "accept", "dns"))
        inp.append(_rule(r, f'iifname "{wan}"', "drop", "wan unsolicited dropped"))
        out.append(
            _rule(
                r,
                f'oifname "{wan}" icmp type destination-unreachable',
                "drop",
                "no unreachable to the wan",
            )
        )
    return "\n".join(
        [
            f"table ip {table(r)} {{",
            _chain("prerouting", "nat hook prerouting priority dstnat", "accept", pre),
            _chain("postrouting", "nat hook postrouting priority srcnat", "accept", post),
            _chain("input", "filter hook input priority filter", "accept", inp),
            _chain("forward", "filter hook forward priority filter", "drop", fwd),
            _chain("output", "filter hook output priority filter", "accept", out),
            "}",
            "",
        ]
    )


def host_ruleset(plan: NetPlan) -> str | None:
    """The host namespace's firewall: drops of ``host_drop_ports`` (None: nothing to do)."""
    if not plan.host_drop_ports:
        return None
    r = plan.run_id
    rules = [
        _rule(r, f"tcp dport {port}", "drop", f"host firewall drops {port}")
        for port in plan.host_drop_ports
    ]
    return "\n".join(
        [
            f"table ip {table(r)} {{",
            _chain("input", "filter hook input priority filter", "accept", rules),
            "}",
            "",
        ]
    )


def _chain(name: str, hook: str, policy: str, rules: list[str]) -> str:
    return "\n".join(
        [f"    chain {name} {{", f"        type {hook}; policy {policy};", *rules, "    }"]
    )


def apply(ns: str, ruleset: str) -> None:
    """Load ``ruleset`` into namespace ``ns`` atomically (``nft -f -``)."""
    sh(ns_argv(ns, ["nft", "-f", "-"]), input=ruleset)


def delete(ns: str, run_id: str) -> None:
    """Remove the lab's table from ``ns`` (tolerates a table or namespace already gone)."""
    sh(ns_argv(ns, ["nft", "delete", "table", "ip", table(run_id)]), check=False)


def counters(ns: str, run_id: str) -> dict[str, int]:
    """Packets counted per rule comment in the lab's table of ``ns`` (summed by comment)."""
    done = sh(ns_argv(ns, ["nft", "-j", "list", "table", "ip", table(run_id)]), check=False)
    if done.returncode != 0:
        return {}
    found: dict[str, int] = {}
    for item in json.loads(done.stdout).get("nftables", []):
        rule: dict[str, Any] | None = item.get("rule")
        if rule is None or "comment" not in rule:
            continue
        packets = sum(
            int(e["counter"]["packets"])
            for e in rule.get("expr", [])
            if isinstance(e, dict) and "counter" in e
        )
        found[rule["comment"]] = found.get(rule["comment"], 0) + packets
    return found
