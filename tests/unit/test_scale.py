"""Scale (docs/scale.md): shards, one lab per worker, the pool's leases, the cheaper-reset
rule, and the lab suite giving the same outcome per test id serially and under -n 2."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rdplab import scenario as sc
from rdplab.backends.base import CallLog
from rdplab.backends.sim import SimBackend
from rdplab.catalog.base import ROLES
from rdplab.errors import LabFileError, ProviderError
from rdplab.lab import Scenario, load_lab
from rdplab.providers.base import LabMachines
from rdplab.providers.pool import lease, load_pool
from rdplab.providers.sim import SimProvider, scenario_twin
from rdplab.workers import (
    shift_address,
    vagrant_machines,
    worker_index,
    worker_name,
    worker_network,
)

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
LAB = load_lab(LAB_FILE)


# -- --lab-shard I/N ----------------------------------------------------------------------------
@pytest.fixture
def lab_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(REPO / "tests" / "test_lab.py", pytester.path / "test_sharded_lab.py")
    return pytester


def collected_scenarios(p: pytest.Pytester, *args: str) -> set[str]:
    result = p.runpytest("--collect-only", "-q", f"--lab-file={LAB_FILE}", *args)
    assert result.ret == 0, result.stdout.str()
    ids = set()
    for line in result.stdout.lines:
        assert not line.endswith("[NOTSET]"), line  # an empty shard deselects, no skip
        if "::" in line and line.endswith("]"):
            ids.add(line.rsplit("[", 1)[1][:-1])
    return ids


def test_a_shard_without_the_healthy_scenario_deselects_its_test(
    lab_dir: pytest.Pytester,
) -> None:
    """No pytest empty-parameter skip ([NOTSET]) for a test with no scenario in the shard."""
    shard = next(
        f"{i}/3"
        for i in (1, 2, 3)
        if "healthy" not in collected_scenarios(lab_dir, f"--lab-shard={i}/3")
    )
    result = lab_dir.runpytest(f"--lab-file={LAB_FILE}", f"--lab-shard={shard}", "-rs")
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert "NOTSET" not in out and "got empty parameter set" not in out
    outcomes = result.parseoutcomes()
    # deselected: test_healthy (no healthy scenario in this shard) and the real-router test
    # (no router on sim)
    assert outcomes.get("skipped", 0) == 0 and outcomes.get("deselected", 0) == 2, outcomes


def test_three_shards_are_disjoint_and_cover_the_lab_file(lab_dir: pytest.Pytester) -> None:
    every = {s.id for s in LAB.scenarios}
    shards = [collected_scenarios(lab_dir, f"--lab-shard={i}/3") for i in (1, 2, 3)]
    assert set().union(*shards) == every == collected_scenarios(lab_dir)
    for a in range(3):
        assert shards[a], f"shard {a + 1}/3 is empty"
        for b in range(a + 1, 3):
            assert not shards[a] & shards[b], (a + 1, b + 1, shards[a] & shards[b])
    # deterministic: the same shard twice is the same set, balanced within one scenario
    assert collected_scenarios(lab_dir, "--lab-shard=2/3") == shards[1]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1of3", "/3", "1/0"])
def test_bad_shard_is_one_line(lab_dir: pytest.Pytester, bad: str) -> None:
    result = lab_dir.runpytest(f"--lab-shard={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*rdplab: --lab-shard must be I/N with 1 <= I <= N*{bad!r}"])
    assert "Traceback" not in result.stderr.str()


# -- one lab per worker ---------------------------------------------------------------------------
def test_worker_index_from_xdist_or_pinned() -> None:
    assert worker_index({}) == 0
    assert worker_index({"PYTEST_XDIST_WORKER": "gw3"}) == 3
    assert worker_index({"PYTEST_XDIST_WORKER": "gw3", "RDPLAB_WORKER": "1"}) == 1
    with pytest.raises(ProviderError, match="RDPLAB_WORKER must be a whole number"):
        worker_index({"RDPLAB_WORKER": "two"})


def test_worker_pairs_have_their_own_names_and_addresses() -> None:
    assert vagrant_machines(0) == {"client": "client", "host": "host"}
    assert vagrant_machines(3) == {"client": "client-w3", "host": "host-w3"}
    with pytest.raises(ProviderError, match="8 client/host pairs"):
        vagrant_machines(8)
    net = LAB.scenario("healthy").network
    assert worker_network(net, 0) is net
    w2 = worker_network(net, 2)
    assert (w2.client_address, w2.host_address, w2.pki_address, w2.stale_address) == (
        "192.168.58.10",
        "192.168.58.11",
        "192.168.58.5",
        "192.168.58.99",
    )
    assert w2.zone["host.rdplab.test"] == "192.168.58.11"
    assert shift_address("host.example", 2) == "host.example"


# -- the inventory pool: leases --------------------------------------------------------------------
INVENTORY = """\
machines:
  client: {{address: {c}, transport: winrm, username: u, password_env: RDPLAB_POOL_TEST_PW}}
  host: {{address: {h}, transport: winrm, username: u, password_env: RDPLAB_POOL_TEST_PW}}
"""


def make_pool(tmp_path: Path, labs: int = 2, timeout: float = 600) -> Path:
    names = []
    for i in range(labs):
        name = f"lab-{'abc'[i]}.yaml"
        (tmp_path / name).write_text(INVENTORY.format(c=f"10.0.{i}.10", h=f"10.0.{i}.11"))
        names.append(name)
    pool = tmp_path / "pool.yaml"
    pool.write_text(f"labs: [{', '.join(names)}]\nlease_timeout: {timeout}\n")
    return pool


def test_each_lease_takes_a_free_lab_and_the_last_waits_then_names_holders(
    tmp_path: Path,
) -> None:
    pool = load_pool(make_pool(tmp_path))
    first, second = lease(pool), lease(pool)
    try:
        assert {first.name, second.name} == {"lab-a.yaml", "lab-b.yaml"}
        told: list[str] = []
        start = time.monotonic()
        with pytest.raises(ProviderError) as info:
            lease(pool, timeout=0.5, progress=told.append)
        assert 0.5 <= time.monotonic() - start < 3
        msg = str(info.value)
        assert msg.startswith(f"{pool.path}: no free lab after waiting 0.5 s (lease_timeout)")
        assert f"lab-a.yaml (held by {worker_name()}, pid {os.getpid()} on" in msg
        assert told == ["rdplab: every lab in pool.yaml is leased; waiting up to 0.5 s for one"]
        second.release()
        third = lease(pool, timeout=0.5)  # released: free again
        assert third.name == second.name
        third.release()
    finally:
        first.release()
        second.release()


def test_a_crashed_holder_frees_its_lab(tmp_path: Path) -> None:
    """The lock dies with the process that held it (kill -9: no release ran)."""
    path = make_pool(tmp_path, labs=1)
    code = (
        "import sys, time\nfrom rdplab.providers.pool import lease, load_pool\n"
        f"held = lease(load_pool({str(path)!r}))\nprint('leased', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "leased"
        with pytest.raises(ProviderError, match="no free lab"):
            lease(load_pool(path), timeout=0.2)
    finally:
        proc.kill()
        proc.wait()
    lease(load_pool(path), timeout=2).release()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("labs: []\n", "pool.yaml:1: labs: List should have at least 1 item"),
        ("labs: [nope.yaml]\n", "pool.yaml:1: labs[0]: no inventory file"),
        ("labs: [lab-a.yaml, lab-a.yaml]\n", "pool.yaml:1: labs[1]: lab-a.yaml is listed twice"),
        ("labs: [lab-a.yaml]\nlease_timeout: -1\n", "pool.yaml:2: lease_timeout"),
    ],
)
def test_pool_file_errors_name_file_line_field(tmp_path: Path, text: str, message: str) -> None:
    make_pool(tmp_path)
    (tmp_path / "pool.yaml").write_text(text)
    with pytest.raises(LabFileError) as info:
        load_pool(tmp_path / "pool.yaml")
    assert message in str(info.value)


# -- the cheaper-reset rule -----------------------------------------------------------------------
class KeepingSim(SimProvider):
    """The sim with a real lab's reset: a machine the last scenario left at its baseline
    is kept as it is (its twin carries over), as a skipped snapshot restore would."""

    always_restore = False

    def __init__(self) -> None:
        self.twins: dict[str, object] = {}

    def reset(self, scenario: Scenario) -> LabMachines:
        for role in self.to_restore(scenario):
            self.twins[role] = scenario_twin(scenario, role)
        calls = CallLog()
        return LabMachines(
            SimBackend("client", self.twins["client"], calls),  # type: ignore[arg-type]
            SimBackend("host", self.twins["host"], calls),  # type: ignore[arg-type]
            calls,
        )


def evidence(run: sc.ScenarioRun) -> tuple[object, ...]:
    return (
        run.error,
        sorted((f.fault, f.role) for f in run.findings),
        run.connection and (run.connection.ok, run.connection.failed_stage),
        sorted((f.fault, f.role) for f in run.findings_after),
        run.connection_after and run.connection_after.ok,
        run.unexpected_diff,
        run.calls,
    )


def test_skip_rule_restores_less_and_changes_no_outcome() -> None:
    always, skipping = KeepingSim(), KeepingSim()
    always.always_restore = True
    a = [sc.run_scenario(always, s) for s in LAB.scenarios]
    b = [sc.run_scenario(skipping, s) for s in LAB.scenarios]
    assert [evidence(r) for r in a] == [evidence(r) for r in b]
    assert always.restores == 2 * len(LAB.scenarios)
    assert skipping.restores < always.restores
    assert sum(len(r.restored) for r in b) == skipping.restores
    for prev, run in itertools.pairwise(b):
        kept = set(ROLES) - set(run.restored)
        # only what the scenario before left clean, on the same baseline, is kept
        assert kept <= set(prev.left_clean)
        for role in kept:
            assert prev.scenario.baselines[role] == run.scenario.baselines[role]
    healthy = next(r for r in b if r.scenario.id == "healthy")
    assert healthy.left_clean == ["client", "host"]


def test_a_failed_scenario_forces_a_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    p = KeepingSim()
    healthy = LAB.scenario("healthy")
    assert sc.run_scenario(p, healthy).left_clean == ["client", "host"]
    assert sc.run_scenario(p, healthy).restored == []  # both kept

    def broken_detect(run: sc.ScenarioRun) -> None:
        run.findings = []
        raise sc.RdplabError("the detector crashed")

    monkeypatch.setitem(sc.STEP_FUNCS, "detect", sc.Step("detect", broken_detect, None))
    failing = sc.run_scenario(p, healthy, sc.steps(*(s.name for s in sc.STEPS)))
    assert failing.error == "the detector crashed" and failing.left_clean == []
    monkeypatch.undo()
    assert sc.run_scenario(p, healthy).restored == ["client", "host"]


def test_a_scenario_failing_its_checks_forces_a_restore() -> None:
    p = KeepingSim()
    healthy = LAB.scenario("healthy")
    run = sc.run_scenario(p, healthy)
    run.findings_after = run.findings_after or []
    run.connection_after = None  # as if the connection had not come back
    assert sc.clean_roles(run) == ()


def test_always_restore_option_keeps_the_old_behaviour(lab_dir: pytest.Pytester) -> None:
    lab_dir.makeconftest(
        """
        from rdplab.plugin import LAB_SESSION
        def pytest_sessionfinish(session):
            p = session.config.stash[LAB_SESSION]._provider
            print(f"always_restore={p.always_restore}")
        """
    )
    result = lab_dir.runpytest(
        "-s", "-q", "-k", "healthy", "--lab-always-restore", f"--lab-file={LAB_FILE}"
    )
    result.stdout.fnmatch_lines(["*always_restore=True*"])


# -- the same outcome per test id, serially and with two workers ----------------------------------
def outcomes(junit: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        out[f"{case.get('classname')}::{case.get('name')}"] = kind
    return out


def test_serial_and_two_workers_give_the_same_outcome_per_test_id(tmp_path: Path) -> None:
    """``tox -e lab -- -n 2`` against a serial run: the same test ids, the same outcomes
    (both are the lab suite on the sim, in subprocesses as tox runs them)."""
    results = {}
    for name, extra in (("serial", []), ("n2", ["-n", "2"])):
        junit = tmp_path / f"{name}.xml"
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "tests/test_lab.py", "-q"),
                *("-p", "no:cacheprovider", f"--junitxml={junit}", *extra),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"},
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        results[name] = outcomes(junit)
    assert len(results["serial"]) >= 7 * (len(LAB.scenarios) - 1)
    assert results["serial"] == results["n2"]
    assert "bringing up nodes" in proc.stdout  # it did run under pytest-xdist
