"""The network between client and host, on the sim: the router twin, the three network
faults (port-forward-missing, port-forward-stale, vpn-mtu-blackhole), the lab file's
``network.router`` and ``client_site``, and every scenario of labs/network.yaml through
the whole lifecycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_composition import assert_composes, assert_unmasks

from rdplab import catalog as cat
from rdplab.errors import LabFileError
from rdplab.lab import load_lab
from rdplab.ops import Op
from rdplab.providers.sim import SimProvider
from rdplab.scenario import run_scenario
from rdplab.twin.router import RouterTwin

ROOT = Path(__file__).resolve().parents[2]
NETWORK_LAB = ROOT / "labs" / "network.yaml"
LAB = load_lab(NETWORK_LAB)
NETWORK_FAULTS = ("port-forward-missing", "port-forward-stale", "vpn-mtu-blackhole")


def rdplab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("sid", [s.id for s in LAB.scenarios])
def test_every_network_lab_scenario_runs_the_whole_lifecycle(sid: str) -> None:
    sc = LAB.scenario(sid)
    run = run_scenario(SimProvider(), sc)
    if sc.healthy:
        assert run.error is None, run.error
        assert run.findings == [] and run.connection is not None and run.connection.ok
        assert run.unexpected_diff == {}
        return
    assert_composes(run)
    assert_unmasks(sc)


def test_the_missing_forward_hides_the_stale_one_until_it_is_fixed() -> None:
    sc = LAB.scenario("missing-forward-hides-stale")
    hidden = sc.hidden()
    assert list(hidden) == [("port-forward-stale", "router")]
    assert hidden[("port-forward-stale", "router")].by == ("port-forward-missing@router",)
    run = run_scenario(SimProvider(), sc)
    assert {(f.fault, f.role) for f in run.findings} == {("port-forward-missing", "router")}
    assert_unmasks(sc)  # after adding the forward, the moved host is found


def test_the_connection_walks_the_router_path() -> None:
    def evidence(sid: str) -> tuple[str | None, str]:
        run = run_scenario(SimProvider(), LAB.scenario(sid))
        assert run.connection is not None
        return run.connection.failed_stage, run.connection.evidence

    stage, why = evidence("port-forward-missing")
    assert stage == "tcp" and "no forward for TCP 3389" in why and "203.0.113.1" in why
    stage, why = evidence("port-forward-stale")
    assert stage == "tcp" and "forwards TCP 3389 to 192.168.56.11" in why
    assert "192.168.56.23" in why
    stage, why = evidence("vpn-mtu-blackhole")
    assert stage == "tls" and "black hole" in why and "MTU 1000" in why
    run = run_scenario(SimProvider(), LAB.scenario("vpn-mtu-blackhole"))
    assert run.connection is not None
    assert [s.name for s in run.connection.stages if s.ok] == ["name-resolution", "tcp", "x224"]
    healthy = run_scenario(SimProvider(), LAB.scenario("healthy-outside"))
    assert healthy.connection is not None and healthy.connection.ok
    assert any("DNAT" in n for n in healthy.connection.notes)


def test_router_twin_ops_are_idempotent_and_roll_back() -> None:
    r = RouterTwin()
    batch = [
        Op("fwd.set", {"port": 3389, "to": "192.168.56.11", "to_port": 3389}),
        Op("mss.clamp"),
        Op("icmp.frag", {"allow": False}),
        Op("link.mtu", {"mtu": 1200}),
        Op("dhcp.reserve", {"name": "host.rdplab.test", "address": "192.168.56.11"}),
    ]
    assert r.apply(batch).changes == 5
    assert r.apply(batch).changes == 0
    before = r.snapshot()
    bad = r.apply([Op("fwd.remove", {"port": 3389}), Op("link.mtu", {"mtu": 9000})])
    assert bad.errors and r.snapshot() == before  # the first op was rolled back


def test_list_json_has_the_network_faults_with_their_machines() -> None:
    done = rdplab("list", "--json")
    assert done.returncode == 0, done.stderr
    faults = {f["id"]: f for f in json.loads(done.stdout)}
    for fid in NETWORK_FAULTS:
        assert faults[fid]["roles"] == ["router"], fid
        assert faults[fid]["needs"]["router"] is True
        assert faults[fid]["sources"], fid
    assert faults["port-forward-stale"]["machines"] == ["host", "router"]
    assert faults["port-forward-missing"]["needs"]["client_site"] == "outside"
    assert faults["vpn-mtu-blackhole"]["needs"]["client_site"] == "vpn"
    assert faults["port-forward-missing"]["hides"][0]["fault"] == "port-forward-stale"


def test_explain_tells_the_vpn_story() -> None:
    done = rdplab("explain", "vpn-mtu-blackhole")
    assert done.returncode == 0, done.stderr
    assert "fragmentation needed" in done.stdout and "clamp-mss" in done.stdout


def _lab(tmp_path: Path, network: str, scenario: str) -> Path:
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    path = tmp_path / "labs" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(
        "machines:\n"
        "  client: {baseline: windows-11}\n"
        "  host: {baseline: windows-server-2022}\n"
        f"{network}"
        "scenarios:\n"
        f"{scenario}",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("network", "scenario", "where", "says"),
    [
        (
            "",
            "  - id: a\n    faults: [port-forward-missing]\n",
            ":6: scenarios[0].faults[0]",
            "needs a router",
        ),
        (
            "",
            "  - id: a\n    faults: []\n    client_site: vpn\n",
            "scenarios[0].client_site",
            "client_site vpn needs a router",
        ),
        (
            "network: {router: {}}\n",
            "  - id: a\n    faults: [vpn-mtu-blackhole]\n    client_site: outside\n",
            "scenarios[0].client_site",
            "fault vpn-mtu-blackhole needs client_site vpn",
        ),
        (
            "network: {router: {tunnel_mtu: 9000}}\n",
            "  - id: a\n    faults: []\n",
            "network.router.tunnel_mtu",
            "1500",
        ),
    ],
    ids=["fault-without-router", "site-without-router", "site-conflict", "bad-mtu"],
)
def test_network_lab_file_errors_name_file_line_and_field(
    tmp_path: Path, network: str, scenario: str, where: str, says: str
) -> None:
    path = _lab(tmp_path, network, scenario)
    with pytest.raises(LabFileError) as err:
        load_lab(path)
    text = str(err.value)
    assert str(path) in text and where in text and says in text, text
    done = rdplab("run", "--lab-file", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_every_network_fault_has_its_whole_story() -> None:
    for fid in NETWORK_FAULTS:
        f = cat.get(fid)
        assert f.explanation and f.sources and f.symptom.stage in ("tcp", "tls")
        assert all(fx.risk == "safe" for p in f.placements for fx in p.fixes)
        assert f.needs_router and f.client_site in ("outside", "vpn")


def test_an_exercise_on_the_network_lab_names_the_router_and_grades_it(tmp_path: Path) -> None:
    """rdplab exercise on labs/network.yaml, as a trainee runs it: a draw with a network
    fault (the first of seeds 1..40 that has one), the symptom says where the user dials
    from, the router's views show the broken state, and naming FAULT@router with a safe
    fix scores 1.0."""
    from rdplab.exercise.pick import draw, lab_digest

    digest = lab_digest(NETWORK_LAB)
    seed, causes = next(
        (s, c)
        for s in range(1, 41)
        for _, c, _ in [draw(LAB, s, 1, digest)]
        if c[0].fault in NETWORK_FAULTS
    )
    state = tmp_path / "ex.json"
    new = rdplab("exercise", "new", "--lab-file", str(NETWORK_LAB), "--seed", str(seed),
                 "--faults", "1", "--state", str(state), "--json")  # fmt: skip
    assert new.returncode == 0, new.stderr
    site = json.loads(new.stdout)["symptom"]["machines"]["client"]["site"]
    assert site == cat.get(causes[0].fault).client_site
    ruleset = rdplab("exercise", "inspect", "router", "ruleset", "--state", str(state))
    assert ruleset.returncode == 0 and "table ip rdplab_nat" in ruleset.stdout
    fault = causes[0].fault
    if fault == "port-forward-missing":
        assert "dnat to" not in ruleset.stdout
    if fault == "vpn-mtu-blackhole":
        assert "frag-needed drop" in ruleset.stdout
    fix = cat.get(fault).placements[0].fixes[0].id
    answer = rdplab("exercise", "answer", f"{fault}@router", "--fix", fix, "--state", str(state),
                    "--out", str(tmp_path / "a.json"))  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert json.loads((tmp_path / "a.json").read_text())["score"] == 1.0
    bad = rdplab("exercise", "inspect", "router", "registry", "--state", str(state))
    assert bad.returncode == 2 and "areas: ruleset, links, dhcp" in bad.stderr


def test_the_host_ip_view_shows_a_moved_lease(tmp_path: Path) -> None:
    from rdplab.exercise import views
    from rdplab.scenario import BREAK

    run = run_scenario(SimProvider(), LAB.scenario("port-forward-stale"), BREAK)
    text = views.ip(run.lab.host.twin, None)  # type: ignore[attr-defined]
    assert "192.168.56.23" in text and "Dhcp" in text and "Enabled" in text
