"""The router side of an exported fix: a shell script for a Linux gateway with nftables.

Each router op (``rdplab.router_ops``) is one shell function here, written once; a script
is those functions plus the fix's ops as calls, in order. Every function is idempotent (it
looks before it changes), prints one line per op and, last, one JSON line with the results
like the Windows scripts' (``{"results": [...]}``). ``--dry-run`` prints what it would do
and changes nothing. It needs root (nft, ip) and, for ``dhcp.reserve``, dnsmasq (the
common DHCP server on Linux gateways; the reservation is a ``dhcp-host=`` line in
``/etc/dnsmasq.d/rdplab.conf``: another DHCP server needs its own equivalent).

The rules live in rdplab's own nftables tables (``ip rdplab_nat`` for the port forwards,
``inet rdplab_filter`` for the MSS clamp and the ICMP policy), each rule tagged with a
comment, so the script never touches a rule it did not make.
"""

from __future__ import annotations

import json
import shlex

from rdplab.ops import Op

HEADER = r"""#!/bin/bash
# rdplab remediation for @FAULT@: fix @FIX@ (@RISK@), on the router.
# @SUMMARY@
# Run as root on the Linux gateway (nftables): bash @NAME@ [--dry-run]
# Client link for link.mtu: RDPLAB_CLIENT_LINK (default wg0).
set -euo pipefail
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
LINK="${RDPLAB_CLIENT_LINK:-wg0}"
RESULTS=()
say() { printf '%s\n' "$*"; }
result() { RESULTS+=("{\"op\": \"$1\", \"changed\": $2, \"detail\": \"$3\"}"); say "$1: $3"; }
run() { if [ "$DRY" = 1 ]; then say "would run: $*"; else "$@"; fi; }
# grep reads to the end (no -q): with pipefail, an early exit would kill nft with SIGPIPE
has_rule() { nft -a list chain "$1" "$2" "$3" 2>/dev/null | grep "comment \"$4\"" >/dev/null; }
drop_rule() {
    local h
    for h in $(nft -a list chain "$1" "$2" "$3" 2>/dev/null \
            | sed -n "s/.*comment \"$4\" # handle \([0-9]*\)/\1/p"); do
        run nft delete rule "$1" "$2" "$3" handle "$h"
    done
}
nat_tables() {
    run nft add table ip rdplab_nat
    run nft add chain ip rdplab_nat prerouting '{ type nat hook prerouting priority dstnat; }'
}
filter_tables() {
    run nft add table inet rdplab_filter
    run nft add chain inet rdplab_filter forward '{ type filter hook forward priority filter; }'
    run nft add chain inet rdplab_filter output '{ type filter hook output priority filter; }'
}
op_fwd_set() {  # port to to_port
    nat_tables
    local tag="rdplab-fwd-$1"
    if nft list chain ip rdplab_nat prerouting 2>/dev/null \
            | grep "tcp dport $1 dnat to $2:$3 comment \"$tag\"" >/dev/null; then
        result fwd.set false "TCP $1 already -> $2:$3"; return
    fi
    drop_rule ip rdplab_nat prerouting "$tag"
    run nft add rule ip rdplab_nat prerouting tcp dport "$1" dnat to "$2:$3" comment "\"$tag\""
    result fwd.set true "TCP $1 -> $2:$3"
}
op_fwd_remove() {  # port
    if has_rule ip rdplab_nat prerouting "rdplab-fwd-$1"; then
        drop_rule ip rdplab_nat prerouting "rdplab-fwd-$1"
        result fwd.remove true "forward of TCP $1 removed"
    else
        result fwd.remove false "no forward of TCP $1"
    fi
}
op_dhcp_reserve() {  # name address
    local conf=/etc/dnsmasq.d/rdplab.conf line="dhcp-host=$1,$2"
    if [ -f "$conf" ] && grep -qxF "$line" "$conf"; then
        result dhcp.reserve false "$1 already reserved"; return
    fi
    if [ "$DRY" = 1 ]; then say "would write $line to $conf"; else
        mkdir -p /etc/dnsmasq.d
        { [ -f "$conf" ] && grep -v "^dhcp-host=$1," "$conf" || true; echo "$line"; } \
            > "$conf.new" && mv "$conf.new" "$conf"
        systemctl restart dnsmasq 2>/dev/null || say "restart your DHCP server to apply it"
    fi
    result dhcp.reserve true "$2 reserved for $1"
}
op_mss_clamp() {
    filter_tables
    if has_rule inet rdplab_filter forward rdplab-mss; then
        result mss.clamp false "MSS already clamped"; return
    fi
    run nft add rule inet rdplab_filter forward tcp flags syn tcp option maxseg size set rt mtu \
        comment '"rdplab-mss"'
    result mss.clamp true "MSS of forwarded SYNs clamped to the route MTU"
}
op_icmp_frag() {  # allow (true|false)
    filter_tables
    if [ "$1" = true ]; then
        if has_rule inet rdplab_filter forward rdplab-icmp-drop \
                || has_rule inet rdplab_filter output rdplab-icmp-drop; then
            drop_rule inet rdplab_filter forward rdplab-icmp-drop
            drop_rule inet rdplab_filter output rdplab-icmp-drop
            result icmp.frag true "ICMP fragmentation-needed passes"
        else
            result icmp.frag false "ICMP fragmentation-needed already passes"
        fi
        return
    fi
    if has_rule inet rdplab_filter output rdplab-icmp-drop; then
        result icmp.frag false "ICMP fragmentation-needed already dropped"; return
    fi
    local chain
    for chain in forward output; do
        run nft add rule inet rdplab_filter "$chain" icmp type destination-unreachable \
            icmp code frag-needed drop comment '"rdplab-icmp-drop"'
    done
    result icmp.frag true "ICMP fragmentation-needed dropped"
}
op_link_mtu() {  # mtu
    local now
    now=$(cat "/sys/class/net/$LINK/mtu")
    if [ "$now" = "$1" ]; then result link.mtu false "$LINK MTU already $1"; return; fi
    run ip link set dev "$LINK" mtu "$1"
    result link.mtu true "$LINK MTU $1"
}
"""

FOOTER = r"""
printf '{"results": [%s]}\n' "$(IFS=,; echo "${RESULTS[*]}")"
"""

#: The shell function of each router op, and the order of its arguments.
CALLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fwd.set": ("op_fwd_set", ("port", "to", "to_port")),
    "fwd.remove": ("op_fwd_remove", ("port",)),
    "dhcp.reserve": ("op_dhcp_reserve", ("name", "address")),
    "mss.clamp": ("op_mss_clamp", ()),
    "icmp.frag": ("op_icmp_frag", ("allow",)),
    "link.mtu": ("op_link_mtu", ("mtu",)),
}


def call(op: Op) -> str:
    func, names = CALLS[op.name]
    args = [json.dumps(v) if isinstance(v, bool) else str(v) for v in (op.args[n] for n in names)]
    return " ".join([func, *map(shlex.quote, args)])


def header(name: str, fault: str, fix_id: str, risk: str, summary: str) -> str:
    """The script's head: its comment lines, the settings and every op's shell function
    (``HEADER``), nothing run yet. ``rdplab.backends.router_ssh`` builds its batches on it."""
    return (
        HEADER.replace("@FAULT@", fault)
        .replace("@FIX@", fix_id)
        .replace("@RISK@", risk)
        .replace("@SUMMARY@", " ".join(summary.split()))
        .replace("@NAME@", name)
    )


def calls(ops: list[Op]) -> str:
    """The ops as calls of their shell functions, one line each, in order."""
    return "\n".join(call(o) for o in ops)


def script(name: str, fault: str, fix_id: str, risk: str, summary: str, ops: list[Op]) -> str:
    head = header(name, fault, fix_id, risk, summary)
    return f"{head}\n# == the fix's ops ==\n{calls(ops)}\n{FOOTER}"
