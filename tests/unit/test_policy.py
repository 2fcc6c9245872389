"""Policy values: where Group Policy writes them, and what rdplab takes when nothing sets
them. Each choice rdplab makes where Microsoft's pages are silent is named here with its
source (docs/sources.md s3, s4)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rdplab import catalog, policy
from rdplab import windows as win
from rdplab.connection import connect
from rdplab.network import Network
from rdplab.ops import Op
from rdplab.twin import Twin

CONTRACT = Path(__file__).resolve().parents[2] / "fixtures" / "contract"


def _reg_sets(ops: Any) -> Iterator[dict[str, Any]]:
    for o in ops:
        name, args = (o["op"], o["args"]) if isinstance(o, dict) else (o.name, o.args)
        if name == "reg.set":
            yield args


def _contract_reg_sets() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(CONTRACT.glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        for batch in (case, case.get("then") or {}):
            for args in _reg_sets(batch.get("ops", [])):
                yield path.name, args


def _catalog_reg_sets() -> Iterator[tuple[str, dict[str, Any]]]:
    for fault in catalog.catalog().values():
        for p in fault.placements:
            for ops in p.breaks.values():
                for args in _reg_sets(ops):
                    yield f"{fault.id} break", args
            for fix in p.fixes:
                for ops in fix.ops.values():
                    for args in _reg_sets(ops):
                        yield f"{fault.id} fix {fix.id}", args


def test_policy_values_are_written_where_the_admx_writes_them() -> None:
    """Contract cases and catalog ops teach where each policy value lives: a known policy
    value name is only ever written under its ADMX key (AuthenticationLevel under
    ...\\Terminal Services, never ...\\Client)."""
    seen = 0
    for where, args in [*_contract_reg_sets(), *_catalog_reg_sets()]:
        key = win.POLICY_LOCATIONS.get(args["name"])
        if key is not None and args["key"].lower().startswith(r"hklm\software\policies"):
            seen += 1
            assert args["key"].lower() == key.lower(), (where, args["key"], args["name"])
    assert seen >= 5  # the check has something to check


def test_the_new_key_contract_case_uses_a_value_the_admx_writes_under_client() -> None:
    case = json.loads((CONTRACT / "reg-set-types-new-key.json").read_text(encoding="utf-8"))
    first = case["ops"][0]["args"]
    assert first["key"] == win.TS_CLIENT_POLICY_KEY
    assert win.POLICY_LOCATIONS[first["name"]] == win.TS_CLIENT_POLICY_KEY
    assert first["name"] != "AllowCertRevocationCheck"  # no ADMX writes that one (s2)


def _lookup(values: dict[tuple[str, str], Any]) -> policy.Lookup:
    return lambda key, name: values.get((key.lower(), name.lower()))


def test_authentication_level_without_policy_is_the_rdp_file_default() -> None:
    """CHOICE (sources.md s3): with "Configure server authentication for client" not
    configured, the ADMX explanation hands the decision to Remote Desktop Connection / the
    .rdp file ("authentication level", 0-3). rdplab reads neither, so it takes the .rdp
    property's documented default, 3 (no authentication requirement specified), and says
    so in the source."""
    eff = policy.server_auth_level(_lookup({}))
    assert eff.value == win.SERVER_AUTH_UNSPECIFIED == 3
    assert eff.source == "rdp-file default"
    assert eff.describe("AuthenticationLevel") == "AuthenticationLevel=3 (rdp-file default)"


def test_authentication_level_policy_wins_and_only_under_terminal_services() -> None:
    policy_key = win.TS_POLICY_KEY.lower()
    client_key = win.TS_CLIENT_POLICY_KEY.lower()
    assert policy.server_auth_level(_lookup({(policy_key, "authenticationlevel"): 1})) == (
        policy.Effective(1, "policy")
    )
    # a value under ...\Client is not the policy: nothing reads it
    assert policy.server_auth_level(_lookup({(client_key, "authenticationlevel"): 1})).value == 3


def test_security_layer_absent_is_negotiate_the_documented_default() -> None:
    """OPEN QUESTION, CHOICE (sources.md s4): no Microsoft page states what a current build
    ships under RDP-Tcp; the only documented default is the unattend reference's 1
    (Negotiate), so an absent value is taken as 1. The baselines set 2 explicitly."""
    eff = policy.security_layer(_lookup({}))
    assert (eff.value, eff.source) == (win.SECURITY_LAYER_NEGOTIATE, "default")


@pytest.mark.parametrize("layer", [None, 1, 2])
def test_absent_negotiate_and_ssl_layers_all_give_mstsc_tls(
    layer: int | None,
    client: Twin,
    host: Twin,
    net: Network,
    apply_ok: Callable[..., Any],
) -> None:
    """Why the open SecurityLayer default does not change the model: for mstsc's
    SSL|HYBRID request, Negotiate and SSL both select TLS with CredSSP."""
    op = (
        Op("reg.delete", {"key": win.RDP_TCP_KEY, "name": "SecurityLayer"})
        if layer is None
        else Op(
            "reg.set",
            {"key": win.RDP_TCP_KEY, "name": "SecurityLayer", "type": "REG_DWORD", "data": layer},
        )
    )
    apply_ok(host, [op])
    result = connect(client, host, net)
    assert result.ok, result.to_json()
    assert [s.name for s in result.stages][2:4] == ["x224", "tls"]
