#!/bin/bash
# rdplab: the lab's router, a Debian NAT gateway between the outside network and the lab
# LAN (docs/vagrant.md, "The router"). Run by the Vagrantfile's "router" shell provisioner
# as root:
#
#   router.sh HOST_ADDRESS RDP_PORT LAN_ADDRESS OUTSIDE_ADDRESS
#
# It installs nftables and dnsmasq, turns on IPv4 forwarding, and leaves the healthy state
# rdplab's router twin starts from: one port forward, outside TCP RDP_PORT to
# HOST_ADDRESS:RDP_PORT, made exactly as rdplab's fwd.set makes it (table ip rdplab_nat,
# chain prerouting, comment "rdplab-fwd-PORT"; src/rdplab/export_router.py), so rdplab's
# facts see it and its faults can remove it. Nothing else is filtered: no MSS clamp, ICMP
# passes, the links keep MTU 1500, no DHCP reservation. It writes the names of the LAN and
# outside interfaces to /etc/rdplab/router.env for rdplab's vagrant provider.
#
# Every step looks before it changes: a second run changes nothing. The rules are loaded at
# boot by rdplab-router.service (nft -f /etc/rdplab/router.nft, saved here).
set -euo pipefail

healthy_forward() {  # port to to_port: the rule rdplab's fwd.set makes
    local tag="rdplab-fwd-$1" h
    nft add table ip rdplab_nat
    nft add chain ip rdplab_nat prerouting '{ type nat hook prerouting priority dstnat; }'
    # grep reads to the end (no -q): nft must not die of SIGPIPE under pipefail
    if nft list chain ip rdplab_nat prerouting \
            | grep "tcp dport $1 dnat to $2:$3 comment \"$tag\"" >/dev/null; then
        echo "rdplab router: forward of TCP $1 to $2:$3 already there"
        return
    fi
    for h in $(nft -a list chain ip rdplab_nat prerouting \
            | sed -n "s/.*comment \"$tag\" # handle \([0-9]*\)/\1/p"); do
        nft delete rule ip rdplab_nat prerouting handle "$h"
    done
    nft add rule ip rdplab_nat prerouting tcp dport "$1" dnat to "$2:$3" comment "\"$tag\""
    echo "rdplab router: forward of TCP $1 to $2:$3 made"
}

interface_of() {  # address -> the interface holding it
    ip -o -4 addr show | awk -v a="$1" '{ split($4, p, "/"); if (p[1] == a) print $2 }' \
        | head -n 1
}

# sourced by rdplab's tests for the functions above only (no packages, no files)
if [ "${RDPLAB_ROUTER_PROVISION_LIB:-0}" = 1 ]; then
    return 0 2>/dev/null || exit 0
fi

if [ "$#" -ne 4 ]; then
    echo "usage: $0 HOST_ADDRESS RDP_PORT LAN_ADDRESS OUTSIDE_ADDRESS" >&2
    exit 2
fi
HOST_ADDRESS=$1 RDP_PORT=$2 LAN_ADDRESS=$3 OUTSIDE_ADDRESS=$4

# -- packages ------------------------------------------------------------------------------
missing=()
for pkg in nftables dnsmasq; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "rdplab router: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
else
    echo "rdplab router: nftables and dnsmasq already installed"
fi

# -- IPv4 forwarding, now and at boot -------------------------------------------------------
if [ "$(cat /etc/sysctl.d/90-rdplab-router.conf 2>/dev/null)" != "net.ipv4.ip_forward = 1" ]; then
    echo "net.ipv4.ip_forward = 1" > /etc/sysctl.d/90-rdplab-router.conf
    echo "rdplab router: IPv4 forwarding on at boot"
fi
if [ "$(sysctl -n net.ipv4.ip_forward)" != 1 ]; then
    sysctl -q -w net.ipv4.ip_forward=1
    echo "rdplab router: IPv4 forwarding on"
fi

# -- the interfaces -------------------------------------------------------------------------
LAN_INTERFACE=$(interface_of "$LAN_ADDRESS")
OUTSIDE_INTERFACE=$(interface_of "$OUTSIDE_ADDRESS")
if [ -z "$LAN_INTERFACE" ] || [ -z "$OUTSIDE_INTERFACE" ]; then
    echo "rdplab router: no interface holds $LAN_ADDRESS (LAN) or $OUTSIDE_ADDRESS (outside);" \
        "the private networks did not come up (ip -4 addr:)" >&2
    ip -o -4 addr show >&2
    exit 1
fi
mkdir -p /etc/rdplab
env_file=$(printf 'lan_interface=%s\noutside_interface=%s\n' "$LAN_INTERFACE" "$OUTSIDE_INTERFACE")
if [ "$(cat /etc/rdplab/router.env 2>/dev/null)" != "$env_file" ]; then
    printf '%s\n' "$env_file" > /etc/rdplab/router.env
fi
echo "rdplab router: LAN $LAN_ADDRESS on $LAN_INTERFACE, outside $OUTSIDE_ADDRESS on $OUTSIDE_INTERFACE"

# -- dnsmasq: rdplab's reservations file (dhcp.reserve writes it), no DHCP range of its own -
mkdir -p /etc/dnsmasq.d
[ -f /etc/dnsmasq.d/rdplab.conf ] || : > /etc/dnsmasq.d/rdplab.conf

# -- the healthy forward, and the rules at boot ---------------------------------------------
healthy_forward "$RDP_PORT" "$HOST_ADDRESS" "$RDP_PORT"
rules=$(nft list table ip rdplab_nat)
if [ "$(cat /etc/rdplab/router.nft 2>/dev/null)" != "$rules" ]; then
    printf '%s\n' "$rules" > /etc/rdplab/router.nft
fi
unit=/etc/systemd/system/rdplab-router.service
want="[Unit]
Description=rdplab router: the lab's port forward (nftables)
After=network-pre.target nftables.service
[Service]
Type=oneshot
ExecStart=/usr/sbin/nft -f /etc/rdplab/router.nft
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target"
if [ "$(cat "$unit" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$unit"
    systemctl daemon-reload
    systemctl enable -q rdplab-router.service
    echo "rdplab router: the forward is restored at boot (rdplab-router.service)"
fi
echo "rdplab router: healthy (forward TCP $RDP_PORT -> $HOST_ADDRESS:$RDP_PORT)"
