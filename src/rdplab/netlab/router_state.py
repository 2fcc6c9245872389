"""The router namespace's real state, read back as the router twin's (``RouterTwin``).

What a trainee changed in a running network lab (``rdplab netlab shell router``: an ``nft``
rule, a link's MTU) is read from the kernel, whatever table or comment the rule carries:
a port forward is any DNAT rule in a NAT prerouting chain with its ``tcp dport``; the MSS
clamp is any rule that sets TCP's maxseg option; ICMP fragmentation-needed is dropped when
any rule drops it; the client link's MTU is the MTU of the router's interface on the
client's side. ``rdplab exercise check --network`` grades with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rdplab.netlab.run import NetlabError, ns_argv, sh
from rdplab.twin.router import Forward, RouterTwin


def _exprs(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [e for e in rule.get("expr") or [] if isinstance(e, dict)]


def _dport(expr: Mapping[str, Any]) -> int | None:
    match = expr.get("match")
    if not isinstance(match, dict) or match.get("op", "==") != "==":
        return None
    left, right = match.get("left"), match.get("right")
    payload = left.get("payload") if isinstance(left, dict) else None
    if isinstance(payload, dict) and (payload.get("protocol"), payload.get("field")) == (
        "tcp",
        "dport",
    ):
        return right if isinstance(right, int) and not isinstance(right, bool) else None
    return None


def _nat_prerouting(items: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for item in items:
        chain = item.get("chain")
        if isinstance(chain, dict) and (chain.get("type"), chain.get("hook")) == (
            "nat",
            "prerouting",
        ):
            out.add((str(chain.get("family")), str(chain.get("table")), str(chain.get("name"))))
    return out


def state_from(ruleset: Mapping[str, Any]) -> dict[str, Any]:
    """forwards, mss_clamp and icmp_frag_needed from ``nft -j list ruleset``."""
    items = [i for i in ruleset.get("nftables") or [] if isinstance(i, dict)]
    nat = _nat_prerouting(items)
    rules = [i["rule"] for i in items if isinstance(i.get("rule"), dict)]
    forwards: dict[int, Forward] = {}
    clamp = False
    frag_dropped = False
    for rule in rules:
        exprs = _exprs(rule)
        where = (str(rule.get("family")), str(rule.get("table")), str(rule.get("chain")))
        port = next((p for p in map(_dport, exprs) if p is not None), None)
        dnat = next((e["dnat"] for e in exprs if isinstance(e.get("dnat"), dict)), None)
        if where in nat and dnat is not None and port is not None and "addr" in dnat:
            to_port = dnat.get("port", port)
            forwards.setdefault(port, Forward(port, str(dnat["addr"]), int(to_port)))
        text = json.dumps(exprs)
        if '"mangle"' in text and '"maxseg"' in text:
            clamp = True
        if "frag-needed" in text and any("drop" in e for e in exprs):
            frag_dropped = True
    return {"forwards": forwards, "mss_clamp": clamp, "icmp_frag_needed": not frag_dropped}


def link_mtu(addresses: Any, client_side_address: str) -> int | None:
    """The MTU of the interface holding ``client_side_address`` (``ip -j -4 addr``)."""
    for link in addresses if isinstance(addresses, list) else []:
        for info in link.get("addr_info") or []:
            if info.get("local") == client_side_address:
                mtu = link.get("mtu")
                return int(mtu) if isinstance(mtu, int) else None
    return None


def read(namespace: str, base: RouterTwin, client_side_address: str) -> RouterTwin:
    """The router twin ``base`` with what the namespace really holds now."""
    ruleset = sh(ns_argv(namespace, ["nft", "-j", "list", "ruleset"]))
    addresses = sh(ns_argv(namespace, ["ip", "-j", "-4", "addr"]))
    try:
        state = state_from(json.loads(ruleset.stdout))
        mtu = link_mtu(json.loads(addresses.stdout), client_side_address)
    except ValueError as exc:
        raise NetlabError(f"{namespace}: cannot read the router's state: {exc}") from None
    return RouterTwin(
        name=base.name,
        lan_address=base.lan_address,
        outside_address=base.outside_address,
        forwards=state["forwards"],
        link_mtu=mtu if mtu is not None else base.link_mtu,
        icmp_frag_needed=state["icmp_frag_needed"],
        mss_clamp=state["mss_clamp"],
        reservations=dict(base.reservations),
    )
