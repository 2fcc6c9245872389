"""The lab suite at scale on the loopback machines: an inventory pool of two loopback
WinRM labs driven by two pytest-xdist workers (one lab each, leased), and a lab that cannot
be reached stopping the run once, up front, with one line (serially and under -n 2)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .test_provider_inventory import REPO, WinRMLab, make_winrm_lab
from .test_provider_vagrant import FakeVagrant, fake_vagrant  # noqa: F401 - the fixture

LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
SCENARIOS = ["healthy", "rdp-disabled", "firewall-blocked", "termservice-stopped"]


@pytest.fixture
def two_labs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[WinRMLab]]:
    with ExitStack() as stack:
        labs = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            labs.append(stack.enter_context(make_winrm_lab(tmp_path / name, monkeypatch)))
        yield labs


def lab_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    shutil.copy(REPO / "tests" / "test_lab.py", pytester.path / "test_pooled_lab.py")
    return pytester.runpytest_subprocess(
        f"--lab-file={LAB_FILE}", "-p", "no:cacheprovider", *args, timeout=600
    )


@pytest.mark.winrm_loopback
def test_pool_of_two_labs_with_two_workers(
    two_labs: list[WinRMLab], pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "labs:\n"
        + "".join(f"  - {lab.inventory.relative_to(tmp_path)}\n" for lab in two_labs)
        + "lease_timeout: 60\n"
    )
    result = lab_suite(
        pytester,
        "-n",
        "2",
        "--lab-provider=inventory",
        f"--lab-pool={pool}",
        "-k",
        " or ".join(f"[{sid}]" for sid in SCENARIOS),
        "-q",
    )
    # healthy: 3 tests; each faulted scenario: 7
    result.assert_outcomes(passed=3 + 7 * (len(SCENARIOS) - 1))
    used = [sum(r.kinds.get("call", 0) for r in lab.responders().values()) for lab in two_labs]
    assert all(used), f"each worker leases its own lab; calls per lab: {used}"
    # the leases are gone with the workers
    assert not list((tmp_path / ".rdplab-pool").glob("*.holder"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


INVENTORY = """\
machines:
  client: {{address: 127.0.0.1, transport: winrm, port: {port}, username: u,
           password_env: RDPLAB_UNREACHABLE_PW, timeout: 5}}
  host: {{address: 127.0.0.1, transport: winrm, port: {port}, username: u,
         password_env: RDPLAB_UNREACHABLE_PW, timeout: 5}}
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "n2"])
@pytest.mark.parametrize("why", ["password-unset", "nothing-listens"])
def test_unreachable_inventory_stops_the_run_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str], why: str
) -> None:
    port = closed_port()
    inventory = pytester.path / "inventory.yaml"
    inventory.write_text(INVENTORY.format(port=port))
    if why == "password-unset":
        monkeypatch.delenv("RDPLAB_UNREACHABLE_PW", raising=False)
        line = "*the environment variable RDPLAB_UNREACHABLE_PW is not set*"
    else:
        monkeypatch.setenv("RDPLAB_UNREACHABLE_PW", "not-a-real-Secret-1")
        line = f"*rdplab: 127.0.0.1:{port} (client): cannot connect for winrm: *"
    where = [f"--lab-inventory={inventory}"]
    if workers:  # several workers need several labs: a pool (of one lab, enough here)
        (pytester.path / "pool.yaml").write_text("labs: [inventory.yaml]\n")
        where = [f"--lab-pool={pytester.path / 'pool.yaml'}"]
    result = lab_suite(pytester, "--lab-provider=inventory", *where, *workers)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([line])
    text = result.stdout.str() + result.stderr.str()
    assert text.count("rdplab: ") == 1, text
    assert "passed" not in text and "failed" not in text and "Traceback" not in text
    assert "not-a-real-Secret-1" not in text


def test_vagrant_without_hypervisor_stops_the_run_once(
    fake_vagrant: FakeVagrant,  # noqa: F811 - the fixture imported above
    pytester: pytest.Pytester,
) -> None:
    fake_vagrant.knob("no_provider")
    (pytester.path / "Vagrantfile").write_text("# the fake does not read it\n")
    for workers in ([], ["-n", "2"]):
        fake_vagrant.clear()
        result = lab_suite(pytester, "--lab-provider=vagrant", *workers)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*rdplab: vagrant found no usable hypervisor provider*"])
        assert (result.stdout.str() + result.stderr.str()).count("rdplab: ") == 1
        # one `vagrant status`, in the main process (the controller), and nothing else
        assert fake_vagrant.calls() == [["status", "--machine-readable"]]


@pytest.mark.winrm_loopback
def test_lab_that_fails_when_contacted_is_one_error_and_no_scenario(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port answers (the preflight passes) but it is no WinRM service: the first lab
    test's set-up fails once with the machine and reason, the run stops, nothing retries."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        inventory = pytester.path / "inventory.yaml"
        inventory.write_text(INVENTORY.format(port=port).replace("timeout: 5", "timeout: 2"))
        monkeypatch.setenv("RDPLAB_UNREACHABLE_PW", "not-a-real-Secret-1")
        result = lab_suite(pytester, "--lab-provider=inventory", f"--lab-inventory={inventory}")
    assert result.ret != 0
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "rdplab: the lab cannot be reached: 127.0.0.1" in out
    assert "Interrupted: rdplab: the lab cannot be reached" in out
    assert "not-a-real-Secret-1" not in out


def test_workers_on_one_inventory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    inventory = pytester.path / "inventory.yaml"
    inventory.write_text(INVENTORY.format(port=closed_port()))
    result = lab_suite(
        pytester, "--lab-provider=inventory", f"--lab-inventory={inventory}", "-n", "2"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*rdplab: -n 2 would run 2 workers on the one lab of*--lab-pool*"])
