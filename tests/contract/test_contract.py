"""The op contract: every case in fixtures/contract, on every backend reachable here.

A case is one op batch on a fresh machine built from a baseline, the per-op results it
must report (op, changed, error substring) and facts a gather must show afterwards::

    {"description": "...", "baseline": "windows-server-2022", "computer_name": "HOST",
     "ops": [{"op": "reg.set", "args": {...}}, ...],
     "gather": {...},                      # optional gather request
     "expect": {"results": [{"op": "reg.set", "changed": true, "error": null}, ...],
                "facts": {"registry[HKLM\\...].values.PortNumber.data": 3390, ...},
                "repeat_unchanged": true},  # optional: the batch again changes nothing
     "then": {"ops": [...], "expect": {...}}}  # optional second batch; "{backup:N}" is
                                               # the backup of result N of the first batch

Fact paths: dot-separated keys; ``[text]`` is a key that may hold dots or spaces, ``[n]``
a list index, ``[field=value]`` the one list element whose field equals value, ``#`` a
length. ``null`` expects the path to be absent.

Backends: ``twin`` (SimBackend, in process), ``winrm-loopback`` (AgentBackend over pywinrm
to tests/loopback/wsman_responder.py) and ``ssh-loopback`` (AgentBackend over SSH to the
loopback sshd of tests/loopback/ssh_server.py, when that module exists). Each costs exactly
one remote call per batch and per gather; the WinRM responder counts the Commands.

``real``: with ``--lab-provider=vagrant`` or ``inventory`` the same cases also run against
the lab's real Windows machines (the case's baseline picks the machine: the Windows 11
baseline is the client, a server baseline the host). The provider brings the machines back
to their baseline before and after each case (snapshot restore, or the rollback journal).
On the sim provider there is no real machine, so no ``real`` case is generated.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from loopback.wsman_responder import Responder
from loopback.wsman_responder import responder as start_responder
from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import Backend, CallLog
from rdplab.backends.sim import SimBackend
from rdplab.baselines import build_twin
from rdplab.ops import BatchResult, Op
from rdplab.transports.winrm import WinRMTransport

CASE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "contract"
CASES = sorted(CASE_DIR.glob("*.json"))
ABSENT = object()


def _has_ssh_server() -> bool:
    try:
        return importlib.util.find_spec("loopback.ssh_server") is not None
    except ImportError:
        return False


BACKENDS = [
    pytest.param("twin", id="twin"),
    pytest.param("winrm-loopback", id="winrm-loopback", marks=pytest.mark.winrm_loopback),
]
if _has_ssh_server():
    BACKENDS.append(pytest.param("ssh-loopback", id="ssh-loopback", marks=pytest.mark.ssh_loopback))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kind" not in metafunc.fixturenames:
        return
    kinds = list(BACKENDS)
    if metafunc.config.getoption("--lab-provider") != "sim":
        kinds.append(pytest.param("real", id="real", marks=pytest.mark.real_windows))
    metafunc.parametrize("kind", kinds)


class MakeBackend(Protocol):
    def __call__(
        self, baseline: str, computer_name: str
    ) -> AbstractContextManager[tuple[Backend, Responder | None]]: ...


# -- fact paths ---------------------------------------------------------------------------------
_STEP = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")


def resolve(doc: Any, path: str) -> Any:
    """The value at ``path`` (see the module docstring), or ABSENT."""
    node = doc
    for m in _STEP.finditer(path):
        bracket, plain = m.group(1), m.group(2)
        step = bracket if bracket is not None else plain
        if plain == "#":
            if not isinstance(node, list | dict):
                return ABSENT
            node = len(node)
        elif isinstance(node, list):
            if bracket is not None and "=" in bracket:
                field, _, want = bracket.partition("=")
                hits = [e for e in node if isinstance(e, dict) and str(e.get(field)) == want]
                assert len(hits) <= 1, f"{path}: {len(hits)} elements have {field}={want}"
                if not hits:
                    return ABSENT
                node = hits[0]
            elif step.isdigit() and int(step) < len(node):
                node = node[int(step)]
            else:
                return ABSENT
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            return ABSENT
    return node


def test_resolve() -> None:
    doc = {"a": {"b.c": [{"n": "x", "v": 1}, {"n": "y", "v": 2}]}}
    assert resolve(doc, "a[b.c][n=y].v") == 2
    assert resolve(doc, "a[b.c][0].n") == "x"
    assert resolve(doc, "a[b.c].#") == 2
    assert resolve(doc, "a[b.c][n=z]") is ABSENT
    assert resolve(doc, "a.missing") is ABSENT


# -- checks ---------------------------------------------------------------------------------------
def check_results(where: str, got: BatchResult, expected: list[dict[str, Any]]) -> None:
    actual = [(r.op, r.changed, r.error) for r in got.results]
    assert len(actual) == len(expected), f"{where}: results {actual}"
    for i, (have, want) in enumerate(zip(actual, expected, strict=True)):
        op, changed, error = have
        assert (op, changed) == (want["op"], want["changed"]), f"{where}: result {i}: {have}"
        if want.get("error") is None:
            assert error is None, f"{where}: result {i} failed: {error}"
        else:
            assert error is not None and want["error"] in error, f"{where}: result {i}: {error!r}"


def check_facts(where: str, raw: dict[str, Any], expected: dict[str, Any]) -> None:
    for path, want in expected.items():
        got = resolve(raw, path)
        if want is None:
            assert got is ABSENT or got is None, f"{where}: {path} should be absent, is {got!r}"
        else:
            assert got is not ABSENT, f"{where}: {path} is absent"
            assert got == want, f"{where}: {path} is {got!r}, expected {want!r}"


def ops_of(raw: list[dict[str, Any]], backups: list[str | None] | None = None) -> list[Op]:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            m = re.fullmatch(r"\{backup:(\d+)\}", value)
            if m:
                assert backups is not None, "{backup:N} only in 'then'"
                backup = backups[int(m.group(1))]
                assert backup, f"result {m.group(1)} reported no backup"
                return backup
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return [Op(o["op"], fill(dict(o.get("args") or {}))) for o in raw]


def run_case(name: str, case: dict[str, Any], backend: Backend) -> int:
    """Run one case; return the number of remote calls it needed."""
    calls = 0
    expect = case["expect"]
    ops = ops_of(case["ops"])
    first = backend.apply(ops)
    calls += 1
    check_results(name, first, expect["results"])
    if expect.get("repeat_unchanged"):
        again = backend.apply(ops)
        calls += 1
        changed = [(r.op, r.detail, r.error) for r in again.results if r.changed or r.error]
        assert changed == [], f"{name}: the batch again changed {changed}"
    if "facts" in expect:
        check_facts(name, backend.gather(case.get("gather")).raw, expect["facts"])
        calls += 1
    then = case.get("then")
    if then:
        second = backend.apply(ops_of(then["ops"], [r.backup for r in first.results]))
        calls += 1
        check_results(f"{name} (then)", second, then["expect"]["results"])
        if "facts" in then["expect"]:
            check_facts(
                f"{name} (then)",
                backend.gather(case.get("gather")).raw,
                then["expect"]["facts"],
            )
            calls += 1
    return calls


# -- backends -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def winrm_machine() -> Iterator[tuple[Responder, WinRMTransport]]:
    with start_responder() as r:
        r.install_agent()
        t = WinRMTransport(
            "127.0.0.1",
            r.port,
            r.username,
            r.password,
            "basic",
            allow_plaintext_basic=True,
            read_timeout=10,
            operation_timeout=5,
        )
        with t:
            assert AgentBackend("host", t, CallLog()).ensure_agent() == "agent current"
            yield r, t


@pytest.fixture
def make_backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> MakeBackend:
    @contextmanager
    def make(baseline: str, computer_name: str) -> Iterator[tuple[Backend, Responder | None]]:
        calls = CallLog()
        if kind == "twin":
            yield SimBackend("host", build_twin(baseline, computer_name), calls), None
        elif kind == "winrm-loopback":
            r, t = request.getfixturevalue("winrm_machine")
            r.twin = build_twin(baseline, computer_name)
            r.reset_counters()
            yield AgentBackend("host", t, calls), r
        elif kind == "real":
            yield real_backend(request, baseline), None
        else:
            ssh_server = importlib.import_module("loopback.ssh_server")
            with ssh_server.ssh_agent_backend(tmp_path, baseline, computer_name) as backend:
                yield backend, None

    return make


def real_backend(request: pytest.FixtureRequest, baseline: str) -> Backend:
    """The lab's real machine for this baseline, brought back to its baseline first; the
    provider restores it again before the next case (and the next scenario)."""
    from rdplab.lab import load_lab
    from rdplab.providers.remote import RemoteProvider

    session = request.getfixturevalue("lab_session")
    provider = session.provider
    assert isinstance(provider, RemoteProvider), f"{provider.name} has no real machines"
    role = "client" if baseline == "windows-11" else "host"
    healthy = next(s for s in load_lab(session.lab_file).scenarios if s.healthy)
    machines = provider.reset(healthy)
    request.addfinalizer(lambda: provider.reset(healthy))
    return machines.backend(role)


@pytest.mark.parametrize("case_file", CASES, ids=[p.stem for p in CASES])
def test_contract(case_file: Path, kind: str, make_backend: MakeBackend) -> None:
    case = json.loads(case_file.read_text(encoding="utf-8"))
    with make_backend(case["baseline"], case["computer_name"]) as (backend, responder):
        needed = run_case(case_file.stem, case, backend)
        assert backend.calls.total == needed  # one call per batch and per gather
        if responder is not None:
            assert responder.command_count == needed, responder.kinds
            assert set(responder.kinds) == {"call"}


def test_cases_are_well_formed() -> None:
    assert len(CASES) >= 10
    for path in CASES:
        case = json.loads(path.read_text(encoding="utf-8"))
        assert set(case) <= {
            "description",
            "baseline",
            "computer_name",
            "ops",
            "gather",
            "expect",
            "then",
        }, path.name
        assert case["baseline"] in ("windows-server-2022", "windows-11"), path.name
        assert case["description"] and case["ops"], path.name
        assert len(case["expect"]["results"]) <= len(case["ops"]), path.name
