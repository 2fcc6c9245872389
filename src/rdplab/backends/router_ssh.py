"""The router over SSH: a real Linux NAT gateway (nftables; dnsmasq for reservations).

Every call is ONE SSH command, ``[sudo -n] env LC_ALL=C RDPLAB_CLIENT_LINK=<link> bash -s``,
with a bash script on stdin:

- ``apply(ops)``: the shell functions of ``rdplab.export_router`` (the same text ``rdplab
  export`` writes) and the ops as calls of them, in order. Each function is idempotent and
  adds a result; the last output line is ``{"results": [...]}``, parsed into a
  ``BatchResult``. A function that fails stops the script (``set -e``): an EXIT trap then
  prints the results so far and the failed op's name, and the batch answers those results
  plus the failed op with its error (the script's exit status and stderr). **The ops before
  it are not rolled back**: their rules stay in force and their results say so (the twin
  rolls a failed batch back; a real router keeps what it did). The provider's next reset
  (``restore``) brings the router back to its baseline; the ops after it never ran.
- ``gather()`` / ``snapshot()``: ``FACTS_SCRIPT`` prints ``nft -j list ruleset``, the MTU
  of ``$RDPLAB_CLIENT_LINK``, ``/etc/dnsmasq.d/rdplab.conf`` and ``ip -j -4 addr`` as marked
  sections; ``router_facts`` (pure, unit-tested on real ``nft -j`` output) turns them into
  exactly ``RouterTwin.snapshot()``'s shape. Only rdplab's own tables are read (``ip
  rdplab_nat``, ``inet rdplab_filter``; rules by their ``rdplab-*`` comments): a forward
  someone made in a table of their own is not seen, and no fault can remove it.
- ``restore(state)``: the router's rdplab rules, client link MTU and reservations back to
  ``state`` (a snapshot taken earlier): forwards not in it removed, its forwards set, the
  MSS clamp and the ICMP policy as it says, the link MTU, and the reservation file rewritten
  only when it differs. What changed is reported like a batch.

The router's user must be root, or have passwordless sudo (``sudo=True``); a script that
finds itself without root stops before it changes anything and says so. Ops are checked
before anything is sent (the vocabulary, an MTU of 576..1500 as the twin's, IPv4 addresses,
plain DHCP names): a bad op raises ``OpError`` and nothing runs. The batch runs export's
functions as they are, ``pipefail`` included (their checks read ``nft``'s output to the end).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from rdplab import export_router
from rdplab.backends.base import Backend, CallLog
from rdplab.errors import BackendError, OpError
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op, OpResult
from rdplab.router_ops import validate_router_op
from rdplab.transports.base import Transport
from rdplab.twin.router import ETHERNET_MTU

NAT_TABLE = ("ip", "rdplab_nat")
FILTER_TABLE = ("inet", "rdplab_filter")
FWD_COMMENT = re.compile(r"rdplab-fwd-(\d+)")
MSS_COMMENT = "rdplab-mss"
ICMP_COMMENT = "rdplab-icmp-drop"
DHCP_CONF = "/etc/dnsmasq.d/rdplab.conf"
#: Linux interface names: at most 15 characters, no slash or blank
IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
DHCP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
MIN_MTU = 576
MAX_SHOWN = 300  # characters of the router's stderr quoted in errors
NO_ROOT_EXIT = 77

#: first thing every script does: no root, no change
NEED_ROOT = rf"""if [ "$(id -u)" != 0 ]; then
    echo "rdplab: the router's commands need root (nft, ip): log in as root, or give the" \
        "user passwordless sudo and set sudo: true" >&2
    exit {NO_ROOT_EXIT}
fi
"""

#: the facts, as marked sections (parsed by ``sections`` and ``router_facts``)
FACTS_SCRIPT = (
    NEED_ROOT
    + r"""set -u
LINK="${RDPLAB_CLIENT_LINK:-wg0}"
CONF=/etc/dnsmasq.d/rdplab.conf
begin() { printf '\n@@rdplab-begin %s\n' "$1"; }
end() { printf '\n@@rdplab-end %s %s\n' "$1" "$2"; }
begin nft; nft -j list ruleset 2>&1; end nft $?
begin mtu; cat "/sys/class/net/$LINK/mtu" 2>&1; end mtu $?
begin dhcp; if [ -e "$CONF" ]; then cat "$CONF" 2>&1; else true; fi; end dhcp $?
begin addr; ip -j -4 addr show 2>&1; end addr $?
"""
)

#: after the header: a failing op stops the script; the trap still prints the results.
TRAP = r"""FAILED=""
on_exit() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        printf '{"results": [%s], "failed": "%s", "exit": %s}\n' \
            "$(IFS=,; echo "${RESULTS[*]}")" "$FAILED" "$rc"
    fi
}
trap on_exit EXIT
"""

#: the restore step's own functions (on top of export_router's helpers)
RESTORE_FUNCTIONS = r"""restore_forwards() {  # ports to keep: every other rdplab forward goes
    local port k keep
    for port in $(nft list chain ip rdplab_nat prerouting 2>/dev/null \
            | sed -n 's/.*comment "rdplab-fwd-\([0-9]*\)".*/\1/p' | sort -u); do
        keep=0
        for k in "$@"; do if [ "$k" = "$port" ]; then keep=1; fi; done
        if [ "$keep" = 0 ]; then
            drop_rule ip rdplab_nat prerouting "rdplab-fwd-$port"
            result fwd.remove true "forward of TCP $port removed"
        fi
    done
}
restore_mss_off() {
    if has_rule inet rdplab_filter forward rdplab-mss; then
        drop_rule inet rdplab_filter forward rdplab-mss
        result mss.unclamp true "MSS clamp removed"
    fi
}
restore_dhcp() {  # name,address ... (exactly these reservations)
    local conf=/etc/dnsmasq.d/rdplab.conf want="" have="" r
    for r in "$@"; do want="${want}dhcp-host=$r"$'\n'; done
    if [ -f "$conf" ]; then have="$(grep '^dhcp-host=' "$conf" || true)"; fi
    if [ -n "$have" ]; then have="$have"$'\n'; fi
    if [ "$want" = "$have" ]; then return; fi
    if [ -z "$want" ]; then rm -f "$conf"; else
        mkdir -p /etc/dnsmasq.d
        printf '%s' "$want" > "$conf.new" && mv "$conf.new" "$conf"
    fi
    systemctl restart dnsmasq 2>/dev/null || say "restart your DHCP server to apply it"
    result dhcp.restore true "DHCP reservations back to the baseline"
}
"""


class RouterFactsError(ValueError):
    """The router's output cannot be read as facts (the message says what and where)."""


# -- facts: pure functions over what the router printed -----------------------------------------
def sections(text: str) -> dict[str, tuple[int, str]]:
    """``FACTS_SCRIPT``'s output: section name -> (exit status, text)."""
    found: dict[str, tuple[int, str]] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@rdplab-begin "):
            name, lines = line.split(" ", 1)[1].strip(), []
            continue
        if line.startswith("@@rdplab-end ") and name is not None:
            parts = line.split()
            rc = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else -1
            found[name] = (rc, "\n".join(lines).strip("\n"))
            name = None
            continue
        if name is not None:
            lines.append(line)
    return found


def nft_rules(ruleset: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rules of ``nft -j list ruleset`` (libnftables' JSON schema)."""
    items = ruleset.get("nftables")
    if not isinstance(items, list):
        raise RouterFactsError("nft -j printed no 'nftables' list")
    return [i["rule"] for i in items if isinstance(i, dict) and isinstance(i.get("rule"), dict)]


def _in(rule: Mapping[str, Any], table: tuple[str, str], chains: Iterable[str]) -> bool:
    return (rule.get("family"), rule.get("table")) == table and rule.get("chain") in set(chains)


def _tcp_dport(expr: Mapping[str, Any]) -> int | None:
    match = expr.get("match")
    if not isinstance(match, dict) or match.get("op") not in ("==", None):
        return None
    left, right = match.get("left"), match.get("right")
    payload = left.get("payload") if isinstance(left, dict) else None
    if (
        isinstance(payload, dict)
        and payload.get("protocol") == "tcp"
        and payload.get("field") == "dport"
        and isinstance(right, int)
        and not isinstance(right, bool)
    ):
        return right
    return None


def forwards_of(rules: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rdplab port forwards: DNAT rules commented ``rdplab-fwd-PORT`` in ``ip
    rdplab_nat`` prerouting, keyed by the port as text, as ``RouterTwin.snapshot``. The
    port is the rule's own ``tcp dport`` (the comment when it has none); the first rule of
    a port wins, as nftables' first DNAT does."""
    found: dict[int, dict[str, Any]] = {}
    for rule in rules:
        if not _in(rule, NAT_TABLE, ("prerouting",)):
            continue
        tag = FWD_COMMENT.fullmatch(str(rule.get("comment") or ""))
        if tag is None:
            continue
        port, to, to_port = int(tag.group(1)), None, None
        for expr in rule.get("expr") or []:
            if not isinstance(expr, dict):
                continue
            port = _tcp_dport(expr) or port
            dnat = expr.get("dnat")
            if isinstance(dnat, dict):
                to, to_port = dnat.get("addr"), dnat.get("port")
        if not isinstance(to, str):
            continue  # not a DNAT to an address: not a forward rdplab made
        target = int(to_port) if isinstance(to_port, int) else port
        found.setdefault(port, {"port": port, "to": to, "to_port": target})
    return {str(p): found[p] for p in sorted(found)}


def has_comment(rules: Iterable[Mapping[str, Any]], chains: Iterable[str], comment: str) -> bool:
    chains = tuple(chains)
    return any(_in(r, FILTER_TABLE, chains) and r.get("comment") == comment for r in rules)


def reservations_of(conf: str) -> dict[str, str]:
    """``dhcp-host=NAME,ADDRESS`` lines of rdplab's dnsmasq file (names in lower case, as
    the twin keys them)."""
    found: dict[str, str] = {}
    for line in conf.splitlines():
        line = line.strip()
        if not line.startswith("dhcp-host="):
            continue
        fields = [f.strip() for f in line.partition("=")[2].split(",")]
        if len(fields) >= 2 and fields[0] and fields[-1]:
            found[fields[0].lower()] = fields[-1]
    return dict(sorted(found.items()))


def interface_address(addr: Any, name: str) -> str | None:
    """The first IPv4 address of interface ``name`` in ``ip -j -4 addr`` output."""
    for link in addr if isinstance(addr, list) else []:
        if isinstance(link, dict) and link.get("ifname") == name:
            for info in link.get("addr_info") or []:
                if isinstance(info, dict) and info.get("family", "inet") == "inet":
                    local = info.get("local")
                    if isinstance(local, str):
                        return local
    return None


def router_facts(
    ruleset: Mapping[str, Any],
    link_mtu: int | None,
    dhcp_conf: str,
    addr: Any,
    *,
    lan_interface: str | None = None,
    outside_interface: str | None = None,
    addresses: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The router's facts in ``RouterTwin.snapshot()``'s shape.

    ``addresses``: the lan/outside addresses to report for an interface not named (the
    lab's own, unchecked); an interface that is named must hold an IPv4 address.
    ``link_mtu`` None: the client link does not exist (reported as None)."""
    rules = nft_rules(ruleset)
    found: dict[str, str | None] = {}
    for side, ifname in (("lan", lan_interface), ("outside", outside_interface)):
        if ifname is None:
            found[side] = (addresses or {}).get(side)
            continue
        address = interface_address(addr, ifname)
        if address is None:
            names = sorted(
                str(link.get("ifname"))
                for link in (addr if isinstance(addr, list) else [])
                if isinstance(link, dict)
            )
            raise RouterFactsError(
                f"interface {ifname} ({side}_interface) has no IPv4 address on the router"
                f" (interfaces with IPv4: {', '.join(names) or 'none'})"
            )
        found[side] = address
    return {
        "addresses": {"lan": found["lan"], "outside": found["outside"]},
        "forwards": forwards_of(rules),
        "link_mtu": link_mtu,
        "icmp_frag_needed": (
            "drop" if has_comment(rules, ("forward", "output"), ICMP_COMMENT) else "pass"
        ),
        "mss_clamp": has_comment(rules, ("forward",), MSS_COMMENT),
        "dhcp_reservations": reservations_of(dhcp_conf),
    }


def parse_facts_output(
    text: str,
    *,
    lan_interface: str | None = None,
    outside_interface: str | None = None,
    addresses: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``FACTS_SCRIPT``'s whole output -> ``router_facts``."""
    parts = sections(text)
    for name in ("nft", "mtu", "dhcp", "addr"):
        if name not in parts:
            raise RouterFactsError(f"the facts script's output has no {name} section")
    rc, nft_text = parts["nft"]
    if rc != 0:
        hint = " (install nftables: apt-get install nftables)" if rc == 127 else ""
        raise RouterFactsError(f"nft -j list ruleset failed (exit {rc}): {_short(nft_text)}{hint}")
    try:
        ruleset = json.loads(nft_text)
    except json.JSONDecodeError:
        raise RouterFactsError(
            f"nft -j printed something that is not JSON: {_short(nft_text)}"
        ) from None
    if not isinstance(ruleset, dict):
        raise RouterFactsError("nft -j printed JSON that is not an object")
    rc, mtu_text = parts["mtu"]
    link_mtu = int(mtu_text.strip()) if rc == 0 and mtu_text.strip().isdigit() else None
    rc, dhcp_text = parts["dhcp"]
    if rc != 0:
        raise RouterFactsError(f"reading {DHCP_CONF} failed (exit {rc}): {_short(dhcp_text)}")
    rc, addr_text = parts["addr"]
    if rc != 0:
        raise RouterFactsError(f"ip -j -4 addr failed (exit {rc}): {_short(addr_text)}")
    try:
        addr = json.loads(addr_text or "[]")
    except json.JSONDecodeError:
        raise RouterFactsError(
            f"ip -j printed something that is not JSON: {_short(addr_text)}"
        ) from None
    return router_facts(
        ruleset,
        link_mtu,
        dhcp_text,
        addr,
        lan_interface=lan_interface,
        outside_interface=outside_interface,
        addresses=addresses,
    )


# -- scripts -----------------------------------------------------------------------------------
def _header() -> str:
    return export_router.header(
        "(stdin)",
        "a batch of router ops",
        "-",
        "-",
        "Sent by rdplab (rdplab.backends.router_ssh) over SSH to bash -s.",
    )


def _check(ops: list[Op]) -> None:
    """The vocabulary's checks, and what a real router needs beyond the twin: an MTU it
    can carry, IPv4 addresses and plain DHCP names (they go into nft rules, a dnsmasq
    file and the results' JSON as they are)."""
    for o in ops:
        validate_router_op(o)
        if o.name == "link.mtu" and not MIN_MTU <= int(o.args["mtu"]) <= ETHERNET_MTU:
            raise OpError(f"link.mtu: {o.args['mtu']} is outside {MIN_MTU}..{ETHERNET_MTU}")
        for arg in ("to", "address"):
            if arg in o.args:
                try:
                    ipaddress.IPv4Address(str(o.args[arg]))
                except ValueError:
                    raise OpError(
                        f"{o.name}: {arg} {o.args[arg]!r} is not an IPv4 address"
                    ) from None
        if o.name == "dhcp.reserve" and not DHCP_NAME.match(str(o.args["name"])):
            raise OpError(f"dhcp.reserve: name {o.args['name']!r} is not a host name")


def _guarded(lines: Iterable[tuple[str, str]]) -> str:
    """(op name, shell line) -> lines that name the op before running it (for the trap)."""
    return "\n".join(f"FAILED={shlex.quote(name)}; {line}" for name, line in lines)


def batch_script(ops: list[Op]) -> str:
    """The script ``apply`` sends: export_router's functions, then the ops."""
    _check(ops)
    body = _guarded((o.name, export_router.call(o)) for o in ops)
    return (
        f"{_header()}\n{NEED_ROOT}{TRAP}# == the batch ==\n{body}\nFAILED=\n{export_router.FOOTER}"
    )


def restore_script(state: Mapping[str, Any]) -> str:
    """The script ``restore`` sends: the router back to ``state`` (a snapshot)."""
    forwards = state.get("forwards") or {}
    if not isinstance(forwards, dict):
        raise OpError("the router's baseline has no forwards mapping")
    ops: list[Op] = []
    steps: list[tuple[str, str]] = []
    keep = [str(int(f["port"])) for f in forwards.values()]
    steps.append(("fwd.remove", " ".join(["restore_forwards", *keep])))
    for f in forwards.values():
        ops.append(Op("fwd.set", {"port": int(f["port"]), "to": str(f["to"]),
                                  "to_port": int(f["to_port"])}))  # fmt: skip
    if state.get("mss_clamp"):
        ops.append(Op("mss.clamp", {}))
    else:
        steps.append(("mss.unclamp", "restore_mss_off"))
    ops.append(Op("icmp.frag", {"allow": state.get("icmp_frag_needed") != "drop"}))
    mtu = state.get("link_mtu")
    if isinstance(mtu, int):
        ops.append(Op("link.mtu", {"mtu": mtu}))
    _check(ops)
    steps += [(o.name, export_router.call(o)) for o in ops]
    reserved = state.get("dhcp_reservations") or {}
    pairs = [shlex.quote(f"{name},{address}") for name, address in sorted(reserved.items())]
    steps.append(("dhcp.restore", " ".join(["restore_dhcp", *pairs])))
    body = _guarded(steps)
    return (
        f"{_header()}\n{RESTORE_FUNCTIONS}{NEED_ROOT}{TRAP}# == back to the baseline ==\n"
        f"{body}\nFAILED=\n{export_router.FOOTER}"
    )


def batch_results(
    host: str, ops: list[Op] | None, rc: int, stdout: bytes, stderr: bytes
) -> BatchResult:
    """A batch's results from its last output line; a failed op gets the exit status and
    stderr as its error. ``ops`` None: the number of results is not checked (restore)."""
    text = stdout.decode("utf-8", "replace").strip()
    last = next((ln for ln in reversed(text.splitlines()) if ln.startswith("{")), "")
    try:
        answer = json.loads(last) if last else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        why = _short(stderr) or _short(stdout) or "no output"
        if rc == NO_ROOT_EXIT:
            raise BackendError(host, f"router: {why}")
        raise BackendError(host, f"router: the batch did not run (exit {rc}): {why}")
    try:
        results = [
            OpResult(str(r["op"]), bool(r["changed"]), str(r.get("detail") or ""))
            for r in answer["results"]
        ]
    except (KeyError, TypeError):
        raise BackendError(host, "router: the batch's results line is malformed") from None
    failed = answer.get("failed")
    if failed:
        results.append(
            OpResult(
                str(failed),
                False,
                "not completed; the ops before it stay applied (not rolled back)",
                error=f"exit {answer.get('exit', rc)}: {_short(stderr) or 'no message'}",
            )
        )
    elif rc != 0:
        results.append(OpResult("batch", False, "", error=f"exit {rc}: {_short(stderr)}"))
    if ops is not None and len(results) > len(ops):
        raise BackendError(host, "router: the batch's results do not match the ops sent")
    return BatchResult(results)


def _short(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


# -- the backend -------------------------------------------------------------------------------
class SSHRouterBackend(Backend):
    """The lab's router: a Linux gateway reached over SSH (``transport``, opened by the
    caller). ``client_link``: the interface toward the remote client (``link.mtu``, the
    facts' ``link_mtu``); ``lan_interface`` / ``outside_interface``: where the facts read
    the router's addresses, else ``addresses`` (the lab file's) are reported as given;
    ``sudo``: run every script through ``sudo -n`` (a user with passwordless sudo)."""

    def __init__(
        self,
        transport: Transport,
        calls: CallLog,
        *,
        client_link: str = "wg0",
        lan_interface: str | None = None,
        outside_interface: str | None = None,
        addresses: Mapping[str, str] | None = None,
        sudo: bool = False,
    ) -> None:
        super().__init__("router", calls)
        for what, name in (
            ("client_link", client_link),
            ("lan_interface", lan_interface),
            ("outside_interface", outside_interface),
        ):
            if name is not None and not IFNAME.match(name):
                raise BackendError(transport.host, f"router {what} {name!r} is not an interface")
        self.transport = transport
        self.client_link = client_link
        self.lan_interface = lan_interface
        self.outside_interface = outside_interface
        self.addresses: dict[str, str] = dict(addresses or {})
        self.sudo = sudo

    @property
    def host(self) -> str:
        return self.transport.host

    def __repr__(self) -> str:
        return f"SSHRouterBackend({self.transport!r}, client_link={self.client_link!r})"

    def command(self) -> str:
        """The one command line every call runs (its script goes on stdin)."""
        line = f"env LC_ALL=C RDPLAB_CLIENT_LINK={shlex.quote(self.client_link)} bash -s"
        return f"sudo -n {line}" if self.sudo else line

    def _run(self, script: str) -> tuple[int, bytes, bytes]:
        self.calls.record(self.role)
        res = self.transport.run(self.command(), stdin=script.encode())
        return res.rc, res.stdout, res.stderr

    def apply(self, ops: list[Op]) -> BatchResult:
        script = batch_script(ops)
        rc, out, err = self._run(script)
        return batch_results(self.host, ops, rc, out, err)

    def restore(self, state: Mapping[str, Any]) -> BatchResult:
        """The router back to ``state`` (a ``snapshot()``), in one command."""
        rc, out, err = self._run(restore_script(state))
        return batch_results(self.host, None, rc, out, err)

    def gather(self, request: dict[str, Any] | None = None) -> Facts:
        """The router's facts (``request`` is for the Windows machines; ignored)."""
        rc, out, err = self._run(FACTS_SCRIPT)
        if rc != 0:
            raise BackendError(
                self.host,
                f"router: the facts script failed (exit {rc}): {_short(err) or _short(out)}",
            )
        try:
            raw = parse_facts_output(
                out.decode("utf-8", "replace"),
                lan_interface=self.lan_interface,
                outside_interface=self.outside_interface,
                addresses=self.addresses,
            )
        except RouterFactsError as exc:
            raise BackendError(self.host, f"router: {exc}") from None
        return Facts("router", raw)

    def snapshot(self) -> dict[str, Any]:
        return self.gather().raw


__all__ = [
    "FACTS_SCRIPT",
    "RouterFactsError",
    "SSHRouterBackend",
    "batch_results",
    "batch_script",
    "forwards_of",
    "parse_facts_output",
    "restore_script",
    "router_facts",
    "sections",
]
