"""Op rendering (lab placeholders), op/result JSON and the vocabulary's shape."""

from __future__ import annotations

import pytest

from rdplab.catalog import catalog
from rdplab.errors import OpError
from rdplab.network import Network, RouterNet
from rdplab.ops import VOCABULARY, BatchResult, Op, OpResult, render, render_op, validate_op
from rdplab.router_ops import validate_router_op

CTX = {"port": 3389, "host.name": "host.lab", "host.address": "10.0.0.1", "flag": True}


def test_whole_placeholder_keeps_the_context_type() -> None:
    assert render("{port}", CTX) == 3389
    assert isinstance(render("{port}", CTX), int)
    assert render("{flag}", CTX) is True


def test_embedded_placeholders_become_text() -> None:
    assert render("{host.name}:{port}", CTX) == "host.lab:3389"
    assert render(" {port}", CTX) == " 3389"
    assert render("http://{host.address}/x", CTX) == "http://10.0.0.1/x"


def test_render_walks_lists_and_dict_values_not_keys() -> None:
    data = {"match": {"local_port": "{port}"}, "{port}": ["{host.name}", 5, None]}
    assert render(data, CTX) == {"match": {"local_port": 3389}, "{port}": ["host.lab", 5, None]}


def test_render_does_not_mutate_its_input() -> None:
    data = {"a": ["{port}"]}
    render(data, CTX)
    assert data == {"a": ["{port}"]}


@pytest.mark.parametrize("text", ["{nope}", "x {nope} y", "{port} and {host.nope}"])
def test_unknown_placeholder_is_an_error(text: str) -> None:
    with pytest.raises(OpError, match="no lab value for"):
        render(text, CTX)


@pytest.mark.parametrize("text", ["{Port}", "{ port }", "{}", "plain", "{1}", "{port.}"])
def test_non_placeholders_are_left_alone(text: str) -> None:
    assert render(text, CTX) == text


def test_render_op_keeps_name() -> None:
    op = render_op(
        Op("reg.set", {"key": "k", "name": "PortNumber", "type": "REG_DWORD", "data": "{port}"}),
        CTX,
    )
    assert op == Op(
        "reg.set", {"key": "k", "name": "PortNumber", "type": "REG_DWORD", "data": 3389}
    )
    validate_op(op)


def test_every_catalog_op_renders_and_validates_with_the_network_context() -> None:
    ctx = Network(router=RouterNet()).context()
    n = 0
    for fault in catalog().values():
        for p in fault.placements:
            groups = [*p.breaks.items(), *(kv for f in p.fixes for kv in f.ops.items())]
            for role, ops in groups:
                for op in ops:
                    rendered = render_op(op, ctx)
                    (validate_router_op if role == "router" else validate_op)(rendered)
                    assert "{" not in str(rendered.args.get("name", ""))
                    n += 1
    assert n > 20


def test_network_context_types() -> None:
    ctx = Network(port=3390).context()
    assert ctx["port"] == 3390
    assert ctx["pki.crl_url"] == "http://pki.rdplab.test/crl/rdplab-ca.crl"
    assert isinstance(ctx["issued.pfx"], str) and len(str(ctx["issued.thumbprint"])) == 40


def test_op_str_hides_pfx() -> None:
    op = Op("cert.import", {"store": "My", "pfx": "SECRETBLOB", "thumbprint": "AB"})
    assert "SECRETBLOB" not in str(op)
    assert str(op) == "cert.import(store='My', thumbprint='AB')"
    assert op.to_json() == {
        "op": "cert.import",
        "args": {"store": "My", "pfx": "SECRETBLOB", "thumbprint": "AB"},
    }


def test_op_result_json_round_trip_and_batch_counts() -> None:
    a = OpResult("reg.set", True, "x", backup="twin://H/backup/1")
    b = OpResult("svc.start", False, "", error="boom")
    assert OpResult.from_json(a.to_json()) == a
    assert OpResult.from_json({"op": "x", "changed": 0, "detail": None}) == OpResult("x", False, "")
    batch = BatchResult([a, b, OpResult("svc.stop", True)])
    assert batch.changes == 2
    assert batch.errors == [b]


def test_vocabulary_specs_are_consistent() -> None:
    for name, spec in VOCABULARY.items():
        assert spec.name == name and spec.doc
        names = [a.name for a in spec.args]
        assert len(names) == len(set(names))
        # required arguments are enforced
        for arg in spec.args:
            if arg.required:
                args = {a.name: _sample(a.kind) for a in spec.args if a.name != arg.name}
                with pytest.raises(OpError, match=f"missing argument '{arg.name}'"):
                    validate_op(Op(name, args))


def _sample(kind: type | tuple[type, ...]) -> object:
    k = kind[0] if isinstance(kind, tuple) else kind
    return {str: "REG_SZ", int: 1, bool: True, dict: {}, list: []}[k]
