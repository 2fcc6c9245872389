"""The router's facts from real ``nft -j`` output, and the scripts the SSH router backend
sends (rdplab.backends.router_ssh).

NFT_RULESET and IP_ADDR were captured here from nftables 1.0.6 and iproute2 6.1 (Debian 12)
in a netlab router namespace after export_router's own functions ran ``fwd.set`` 3389 and
8443, ``mss.clamp`` and ``icmp.frag allow=false``, and after a foreign table ``ip mynat``
with a DNAT rule of its own was added (with an rdplab-looking comment, to show that only
rdplab's tables count); they are re-indented, not edited.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from rdplab import export_router
from rdplab.backends import router_ssh as rs
from rdplab.backends.base import CallLog
from rdplab.errors import BackendError, OpError
from rdplab.ops import Op
from rdplab.transports.base import CommandResult, Transport
from rdplab.twin.router import Forward, RouterTwin

NFT_RULESET = r"""{
 "nftables": [
  {
   "metainfo": {
    "version": "1.0.6",
    "release_name": "Lester Gooch #5",
    "json_schema_version": 1
   }
  },
  {
   "table": {
    "family": "ip",
    "name": "rdplab_nat",
    "handle": 2
   }
  },
  {
   "chain": {
    "family": "ip",
    "table": "rdplab_nat",
    "name": "prerouting",
    "handle": 1,
    "type": "nat",
    "hook": "prerouting",
    "prio": -100,
    "policy": "accept"
   }
  },
  {
   "rule": {
    "family": "ip",
    "table": "rdplab_nat",
    "chain": "prerouting",
    "handle": 2,
    "comment": "rdplab-fwd-3389",
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "tcp",
         "field": "dport"
        }
       },
       "right": 3389
      }
     },
     {
      "dnat": {
       "addr": "192.168.56.11",
       "port": 3389
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "ip",
    "table": "rdplab_nat",
    "chain": "prerouting",
    "handle": 3,
    "comment": "rdplab-fwd-8443",
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "tcp",
         "field": "dport"
        }
       },
       "right": 8443
      }
     },
     {
      "dnat": {
       "addr": "192.168.56.12",
       "port": 443
      }
     }
    ]
   }
  },
  {
   "table": {
    "family": "inet",
    "name": "rdplab_filter",
    "handle": 3
   }
  },
  {
   "chain": {
    "family": "inet",
    "table": "rdplab_filter",
    "name": "forward",
    "handle": 1,
    "type": "filter",
    "hook": "forward",
    "prio": 0,
    "policy": "accept"
   }
  },
  {
   "chain": {
    "family": "inet",
    "table": "rdplab_filter",
    "name": "output",
    "handle": 2,
    "type": "filter",
    "hook": "output",
    "prio": 0,
    "policy": "accept"
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "rdplab_filter",
    "chain": "forward",
    "handle": 3,
    "comment": "rdplab-mss",
    "expr": [
     {
      "match": {
       "op": "in",
       "left": {
        "payload": {
         "protocol": "tcp",
         "field": "flags"
        }
       },
       "right": "syn"
      }
     },
     {
      "mangle": {
       "key": {
        "tcp option": {
         "name": "maxseg",
         "field": "size"
        }
       },
       "value": {
        "rt": {
         "key": "mtu"
        }
       }
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "rdplab_filter",
    "chain": "forward",
    "handle": 4,
    "comment": "rdplab-icmp-drop",
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "icmp",
         "field": "type"
        }
       },
       "right": "destination-unreachable"
      }
     },
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "icmp",
         "field": "code"
        }
       },
       "right": "frag-needed"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "rdplab_filter",
    "chain": "output",
    "handle": 5,
    "comment": "rdplab-icmp-drop",
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "icmp",
         "field": "type"
        }
       },
       "right": "destination-unreachable"
      }
     },
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "icmp",
         "field": "code"
        }
       },
       "right": "frag-needed"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "table": {
    "family": "ip",
    "name": "mynat",
    "handle": 4
   }
  },
  {
   "chain": {
    "family": "ip",
    "table": "mynat",
    "name": "pre",
    "handle": 1,
    "type": "nat",
    "hook": "prerouting",
    "prio": -100,
    "policy": "accept"
   }
  },
  {
   "rule": {
    "family": "ip",
    "table": "mynat",
    "chain": "pre",
    "handle": 2,
    "comment": "rdplab-fwd-3389",
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "tcp",
         "field": "dport"
        }
       },
       "right": 3389
      }
     },
     {
      "dnat": {
       "addr": "10.0.0.9"
      }
     }
    ]
   }
  }
 ]
}
"""

IP_ADDR = r"""[
 {
  "ifindex": 1,
  "ifname": "lo",
  "flags": [
   "LOOPBACK",
   "UP",
   "LOWER_UP"
  ],
  "mtu": 65536,
  "qdisc": "noqueue",
  "operstate": "UNKNOWN",
  "group": "default",
  "txqlen": 1000,
  "addr_info": [
   {
    "family": "inet",
    "local": "127.0.0.1",
    "prefixlen": 8,
    "scope": "host",
    "label": "lo",
    "valid_life_time": 4294967295,
    "preferred_life_time": 4294967295
   }
  ]
 },
 {
  "ifindex": 2,
  "ifname": "brzz3",
  "flags": [
   "BROADCAST",
   "MULTICAST",
   "UP",
   "LOWER_UP"
  ],
  "mtu": 1500,
  "qdisc": "noqueue",
  "operstate": "UNKNOWN",
  "group": "default",
  "txqlen": 1000,
  "addr_info": [
   {
    "family": "inet",
    "local": "192.168.56.1",
    "prefixlen": 24,
    "scope": "global",
    "label": "brzz3",
    "valid_life_time": 4294967295,
    "preferred_life_time": 4294967295
   }
  ]
 },
 {
  "ifindex": 4,
  "link_index": 2,
  "ifname": "rczz3",
  "flags": [
   "BROADCAST",
   "MULTICAST",
   "UP",
   "LOWER_UP"
  ],
  "mtu": 1500,
  "qdisc": "noqueue",
  "operstate": "UP",
  "group": "default",
  "txqlen": 1000,
  "link_netnsid": 1,
  "addr_info": [
   {
    "family": "inet",
    "local": "203.0.113.1",
    "prefixlen": 24,
    "scope": "global",
    "label": "rczz3",
    "valid_life_time": 4294967295,
    "preferred_life_time": 4294967295
   }
  ]
 }
]
"""

EMPTY_RULESET = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",'
    ' "json_schema_version": 1}}]}'
)
FWD_3389 = Op("fwd.set", {"port": 3389, "to": "192.168.56.11", "to_port": 3389})


def facts_output(
    nft: str = NFT_RULESET,
    mtu: str = "1500",
    dhcp: str = "",
    addr: str = IP_ADDR,
    rcs: dict[str, int] | None = None,
) -> str:
    """What FACTS_SCRIPT prints, section by section."""
    rcs = rcs or {}
    parts = []
    for name, text in (("nft", nft), ("mtu", mtu), ("dhcp", dhcp), ("addr", addr)):
        parts.append(f"\n@@rdplab-begin {name}\n{text}\n@@rdplab-end {name} {rcs.get(name, 0)}\n")
    return "".join(parts)


# -- the facts -----------------------------------------------------------------------------------
def test_real_ruleset_gives_the_twins_shape() -> None:
    facts = rs.router_facts(
        json.loads(NFT_RULESET),
        1400,
        "dhcp-host=HOST.rdplab.test,192.168.56.23\n",
        json.loads(IP_ADDR),
        lan_interface="brzz3",
        outside_interface="rczz3",
    )
    assert facts == {
        "addresses": {"lan": "192.168.56.1", "outside": "203.0.113.1"},
        "forwards": {
            "3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389},
            "8443": {"port": 8443, "to": "192.168.56.12", "to_port": 443},
        },
        "link_mtu": 1400,
        "icmp_frag_needed": "drop",
        "mss_clamp": True,
        "dhcp_reservations": {"host.rdplab.test": "192.168.56.23"},
    }
    twin = RouterTwin(
        lan_address="192.168.56.1",
        outside_address="203.0.113.1",
        forwards={
            3389: Forward(3389, "192.168.56.11", 3389),
            8443: Forward(8443, "192.168.56.12", 443),
        },
        link_mtu=1400,
        icmp_frag_needed=False,
        mss_clamp=True,
        reservations={"host.rdplab.test": "192.168.56.23"},
    )
    assert facts == twin.snapshot()  # the same keys, order and values as the twin's


def test_only_rdplabs_own_tables_count() -> None:
    """ip mynat has a DNAT of 3389 to 10.0.0.9, comment and all: not rdplab's table."""
    forwards = rs.forwards_of(rs.nft_rules(json.loads(NFT_RULESET)))
    assert forwards["3389"]["to"] == "192.168.56.11"
    assert not any(f["to"] == "10.0.0.9" for f in forwards.values())


def test_an_empty_ruleset_is_the_bare_router() -> None:
    facts = rs.router_facts(
        json.loads(EMPTY_RULESET), 1500, "", [], addresses={"lan": "192.168.56.1"}
    )
    assert facts == {
        "addresses": {"lan": "192.168.56.1", "outside": None},
        "forwards": {},
        "link_mtu": 1500,
        "icmp_frag_needed": "pass",
        "mss_clamp": False,
        "dhcp_reservations": {},
    }


def test_a_forward_without_a_port_keeps_the_port() -> None:
    rule = {
        "family": "ip",
        "table": "rdplab_nat",
        "chain": "prerouting",
        "comment": "rdplab-fwd-3389",
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": 3389}},
            {"dnat": {"addr": "192.168.56.11"}},
        ],
    }  # fmt: skip
    second = {**rule, "expr": [rule["expr"][0], {"dnat": {"addr": "192.168.56.99"}}]}
    assert rs.forwards_of([rule, second]) == {
        "3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}  # the first wins
    }


def test_the_icmp_drop_in_output_alone_counts() -> None:
    rules = [
        r
        for r in rs.nft_rules(json.loads(NFT_RULESET))
        if not (r.get("chain") == "forward" and r.get("comment") == "rdplab-icmp-drop")
    ]
    assert rs.has_comment(rules, ("forward", "output"), "rdplab-icmp-drop")
    assert not rs.has_comment(rules, ("output",), "rdplab-mss")


def test_reservations_file() -> None:
    conf = (
        "# rdplab\n"
        "dhcp-host=Host.rdplab.test,192.168.56.23\n"
        "dhcp-host=aa:bb:cc:dd:ee:ff,client,192.168.56.10\n"
        "dhcp-range=192.168.56.100,192.168.56.200\n"
    )
    assert rs.reservations_of(conf) == {
        "aa:bb:cc:dd:ee:ff": "192.168.56.10",
        "host.rdplab.test": "192.168.56.23",
    }


def test_sections_and_the_whole_output() -> None:
    text = facts_output(dhcp="dhcp-host=host.rdplab.test,192.168.56.23")
    parts = rs.sections(text)
    assert sorted(parts) == ["addr", "dhcp", "mtu", "nft"]
    assert parts["mtu"] == (0, "1500")
    facts = rs.parse_facts_output(text, lan_interface="brzz3", outside_interface="rczz3")
    assert facts["link_mtu"] == 1500
    assert facts["dhcp_reservations"] == {"host.rdplab.test": "192.168.56.23"}
    assert facts["addresses"] == {"lan": "192.168.56.1", "outside": "203.0.113.1"}


def test_a_missing_client_link_has_no_mtu() -> None:
    text = facts_output(
        mtu="cat: /sys/class/net/wg0/mtu: No such file or directory", rcs={"mtu": 1}
    )
    assert rs.parse_facts_output(text)["link_mtu"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (facts_output(nft="bash: nft: command not found", rcs={"nft": 127}),
         "nft -j list ruleset failed (exit 127): bash: nft: command not found (install nftables"),
        (facts_output(nft="Error: Operation not permitted", rcs={"nft": 1}),
         "nft -j list ruleset failed (exit 1): Error: Operation not permitted"),
        (facts_output(nft="<html>"), "nft -j printed something that is not JSON: <html>"),
        (facts_output(nft="{}"), "nft -j printed no 'nftables' list"),
        (facts_output(addr="nope"), "ip -j printed something that is not JSON: nope"),
        (facts_output().split("@@rdplab-begin addr")[0], "has no addr section"),
    ],
)  # fmt: skip
def test_unreadable_output_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(rs.RouterFactsError) as err:
        rs.parse_facts_output(text)
    assert message in str(err.value)


def test_a_named_interface_must_have_an_address() -> None:
    with pytest.raises(rs.RouterFactsError) as err:
        rs.parse_facts_output(facts_output(), lan_interface="eth1")
    assert str(err.value) == (
        "interface eth1 (lan_interface) has no IPv4 address on the router"
        " (interfaces with IPv4: brzz3, lo, rczz3)"
    )


# -- the scripts ---------------------------------------------------------------------------------
def bash_n(script: str) -> None:
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_batch_script_is_export_routers_functions_and_the_calls() -> None:
    ops = [FWD_3389, Op("mss.clamp", {}), Op("icmp.frag", {"allow": False})]
    script = rs.batch_script(ops)
    bash_n(script)
    head = export_router.header("x", "y", "z", "w", "v")
    functions = head[head.index("set -euo pipefail") :]
    assert functions in script  # the very functions rdplab export writes
    assert "FAILED=fwd.set; op_fwd_set 3389 192.168.56.11 3389\n" in script
    assert "FAILED=mss.clamp; op_mss_clamp\n" in script
    assert "FAILED=icmp.frag; op_icmp_frag false\n" in script
    assert script.rstrip().endswith(export_router.FOOTER.strip())
    assert script.index('[ "$(id -u)" != 0 ]') < script.index("# == the batch ==")


def test_export_routers_script_is_header_calls_footer() -> None:
    ops = [FWD_3389, Op("mss.clamp", {})]
    text = export_router.script("n.sh", "f", "x", "safe", "one  two", ops)
    assert text == (
        export_router.header("n.sh", "f", "x", "safe", "one two")
        + "\n# == the fix's ops ==\n"
        + export_router.calls(ops)
        + "\n"
        + export_router.FOOTER
    )


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Op("fwd.sett", {}), "unknown router op 'fwd.sett'"),
        (Op("fwd.set", {"port": 3389, "to": "x"}), "missing argument 'to_port'"),
        (Op("link.mtu", {"mtu": 9000}), "link.mtu: 9000 is outside 576..1500"),
        (Op("reg.set", {}), "unknown router op 'reg.set'"),
        (Op("fwd.set", {"port": 1, "to": "x\"y", "to_port": 1}),
         "fwd.set: to 'x\"y' is not an IPv4 address"),
        (Op("dhcp.reserve", {"name": "a b", "address": "192.168.56.23"}),
         "dhcp.reserve: name 'a b' is not a host name"),
    ],
)  # fmt: skip
def test_bad_ops_are_refused_before_anything_is_sent(op: Op, message: str) -> None:
    with pytest.raises(OpError) as err:
        rs.batch_script([FWD_3389, op])
    assert message in str(err.value)


def test_restore_script_brings_the_baseline_back() -> None:
    state = RouterTwin(
        forwards={3389: Forward(3389, "192.168.56.11", 3389)},
        link_mtu=1420,
        reservations={"host.rdplab.test": "192.168.56.11"},
    ).snapshot()
    script = rs.restore_script(state)
    bash_n(script)
    body = script[script.index("# == back to the baseline ==") :].splitlines()[1:8]
    assert body == [
        "FAILED=fwd.remove; restore_forwards 3389",
        "FAILED=mss.unclamp; restore_mss_off",
        "FAILED=fwd.set; op_fwd_set 3389 192.168.56.11 3389",
        "FAILED=icmp.frag; op_icmp_frag true",
        "FAILED=link.mtu; op_link_mtu 1420",
        "FAILED=dhcp.restore; restore_dhcp host.rdplab.test,192.168.56.11",
        "FAILED=",
    ]
    clamped = rs.restore_script({**state, "mss_clamp": True, "link_mtu": None,
                                 "icmp_frag_needed": "drop", "dhcp_reservations": {}})  # fmt: skip
    assert "op_mss_clamp" in clamped and "restore_mss_off\n" not in clamped
    assert "op_icmp_frag false" in clamped and "; op_link_mtu" not in clamped
    assert "FAILED=dhcp.restore; restore_dhcp\n" in clamped


# -- the results ---------------------------------------------------------------------------------
def test_results_line_becomes_a_batch_result() -> None:
    out = (
        b"fwd.set: TCP 3389 -> 192.168.56.11:3389\n"
        b'{"results": [{"op": "fwd.set", "changed": true, "detail": "TCP 3389 -> x"}]}\n'
    )
    result = rs.batch_results("r1", [FWD_3389], 0, out, b"")
    assert [(r.op, r.changed, r.error) for r in result.results] == [("fwd.set", True, None)]


def test_a_failed_op_reports_its_error_and_keeps_the_earlier_results() -> None:
    out = (
        b'{"results": [{"op": "fwd.set", "changed": true, "detail": "TCP 3389 -> x"}],'
        b' "failed": "link.mtu", "exit": 1}\n'
    )
    err = b"cat: /sys/class/net/wg0/mtu: No such file or directory\n"
    ops = [FWD_3389, Op("link.mtu", {"mtu": 1400}), Op("mss.clamp", {})]
    result = rs.batch_results("r1", ops, 1, out, err)
    assert [(r.op, r.changed) for r in result.results] == [("fwd.set", True), ("link.mtu", False)]
    failed = result.results[1]
    assert failed.error == "exit 1: cat: /sys/class/net/wg0/mtu: No such file or directory"
    assert "not rolled back" in failed.detail


@pytest.mark.parametrize(
    ("rc", "out", "err", "message"),
    [
        (1, b"", b"sudo: a password is required\n",
         "r1: router: the batch did not run (exit 1): sudo: a password is required"),
        (77, b"", b"rdplab: the router's commands need root (nft, ip): log in as root\n",
         "r1: router: rdplab: the router's commands need root (nft, ip): log in as root"),
        (0, b'{"results": [{"changed": true}]}\n', b"",
         "r1: router: the batch's results line is malformed"),
    ],
)  # fmt: skip
def test_a_batch_without_results_is_an_error(rc: int, out: bytes, err: bytes, message: str) -> None:
    with pytest.raises(BackendError) as exc:
        rs.batch_results("r1", [FWD_3389], rc, out, err)
    assert str(exc.value) == message


# -- the backend over a stand-in transport (the loopback suite has the real sshd) ---------------
class Canned(Transport):
    def __init__(self, answers: list[CommandResult]) -> None:
        super().__init__("192.0.2.7")
        self.answers = answers
        self.sent: list[tuple[str, bytes | None]] = []

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        self.commands += 1
        self.sent.append((command, stdin))
        return self.answers.pop(0)


def test_one_command_per_call_and_sudo() -> None:
    ok = CommandResult(0, facts_output().encode(), b"")
    t = Canned([ok, ok])
    calls = CallLog()
    addresses = {"lan": "192.168.56.1", "outside": "203.0.113.1"}
    b = rs.SSHRouterBackend(t, calls, client_link="wg0", sudo=True, addresses=addresses)
    facts = b.gather({"ports": [3389]})
    assert facts.machine == "router" and facts.raw["forwards"]["3389"]["to"] == "192.168.56.11"
    assert facts.raw["addresses"] == {"lan": "192.168.56.1", "outside": "203.0.113.1"}
    assert b.snapshot() == facts.raw
    assert [c for c, _ in t.sent] == ["sudo -n env LC_ALL=C RDPLAB_CLIENT_LINK=wg0 bash -s"] * 2
    assert t.sent[0][1] == rs.FACTS_SCRIPT.encode()
    assert calls.to_json() == {"router/setup": 2}


def test_bad_interface_names_are_refused() -> None:
    with pytest.raises(BackendError) as err:
        rs.SSHRouterBackend(Canned([]), CallLog(), client_link="wg0; reboot")
    assert str(err.value) == "192.0.2.7: router client_link 'wg0; reboot' is not an interface"


def test_gather_errors_name_the_router() -> None:
    t = Canned([CommandResult(0, facts_output(nft="x", rcs={"nft": 1}).encode(), b"")])
    with pytest.raises(BackendError) as err:
        rs.SSHRouterBackend(t, CallLog()).gather()
    assert str(err.value) == "192.0.2.7: router: nft -j list ruleset failed (exit 1): x"
