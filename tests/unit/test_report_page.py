"""The readable report page: stage diagrams, the settings table, the matrix, and the page
pytest-html writes (also when xdist workers ran the scenarios)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from rdplab.lab import load_lab
from rdplab.providers import get_provider
from rdplab.report_page import matrix, section, section_head, settings_rows, stage_svg
from rdplab.scenario import run_scenario

REPO = Path(__file__).resolve().parents[2]
LAB = load_lab(REPO / "labs" / "rdp-0x904.yaml")


def test_the_broken_diagram_marks_the_failing_stage_and_its_codes() -> None:
    run = run_scenario(get_provider("sim"), LAB.scenario("rdp-disabled-policy"))
    svg = stage_svg(run.connection, "rdp-disabled-policy", "broken", "after the break")
    assert 'data-scenario="rdp-disabled-policy"' in svg and 'data-phase="broken"' in svg
    states = re.findall(r'data-stage="([^"]+)" data-state="([^"]+)"', svg)
    assert states == [
        ("name-resolution", "ok"),
        ("tcp", "failed"),
        ("x224", "not-reached"),
        ("tls", "not-reached"),
        ("credssp", "not-reached"),
        ("licensing", "not-reached"),
    ]
    assert ">0x904 / 0x7</text>" in svg and 'stroke="#d93025"' in svg


def test_negotiation_failure_code_is_drawn() -> None:
    run = run_scenario(get_provider("sim"), LAB.scenario("security-layer-mismatch"))
    svg = stage_svg(run.connection, "security-layer-mismatch", "broken", "after the break")
    assert "0x904 / 0x7, RDP_NEG_FAILURE 0x2" in svg


def test_settings_rows_say_before_after_and_source() -> None:
    run = run_scenario(get_provider("sim"), LAB.scenario("rdp-disabled-policy"))
    rows = {(r[0], r[1]): r[2:] for r in settings_rows(run)}
    key = (
        "host",
        r"HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\fDenyTSConnections",
    )
    before, broken, fixed, source = rows[key]
    assert (before, broken, fixed) == (None, 1, None)
    assert "break: rdp-disabled" in source or "fix: rdp-disabled/" in source, source


def test_section_and_matrix_carry_the_scenario_id() -> None:
    run = run_scenario(get_provider("sim"), LAB.scenario("rdp-cert-corrupt"))
    outcomes = {("rdp-cert-corrupt", "detect"): "passed", ("rdp-cert-corrupt", "fix"): "failed"}
    page = section(
        "rdp-cert-corrupt", section_head(run), {"detect": "<p>x</p>", "fix": "<p>y</p>"}, outcomes
    )
    assert page.count('data-scenario="rdp-cert-corrupt"') == 1 + 1 + 3  # section, figures, svgs
    assert 'id="ev-rdp-cert-corrupt-detect"' in page and 'id="ev-rdp-cert-corrupt-fix"' in page
    grid = matrix(["rdp-cert-corrupt"], outcomes)
    assert '<tr data-scenario="rdp-cert-corrupt">' in grid
    assert 'class="rdplab-cell-failed"' in grid and 'href="#ev-rdp-cert-corrupt-fix"' in grid


def test_the_page_under_xdist_has_every_selected_scenario(tmp_path: Path) -> None:
    """Scenarios run in xdist workers; their sections travel to the process writing HTML."""
    out = tmp_path / "lab.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "tests" / "test_lab.py"),
            "-p",
            "no:cacheprovider",
            "-q",
            "-n",
            "2",
            "-k",
            "rdp-disabled or healthy",
            f"--html={out}",
            "--self-contained-html",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    page = out.read_text()
    top = page.index('id="rdplab-matrix"')
    assert top < page.index("What ran on what") < page.index("<h2>Scenarios</h2>")
    rows = re.findall(r'<tr data-scenario="([^"]+)">', page)
    assert rows == ["healthy", "rdp-disabled", "rdp-disabled-policy"]
    sections = re.findall(r'<section class="rdplab-scenario" id="scenario-([^"]+)"', page)
    assert sections == rows
    assert "<pre>" not in page[top:]  # evidence as tables, not JSON dumps


def test_without_a_fix_the_table_shows_the_break_alone() -> None:
    """A run whose fix never ran (skipped or stopped) lists what the break changed, not
    every gathered setting."""
    run = run_scenario(get_provider("sim"), LAB.scenario("listener-port-changed"))
    run.facts_after = {}
    rows = settings_rows(run)
    assert [r[1].rsplit("\\", 1)[-1] for r in rows] == ["PortNumber"]
    assert rows[0][2:5] == (3389, 3390, None)


def test_the_section_says_what_is_hidden_and_by_what() -> None:
    run = run_scenario(get_provider("sim"), LAB.scenario("firewall-and-licensing"))
    head = section_head(run)
    assert '<li data-hidden="licensing-cache-stale@client" data-kind="connection">' in head
    assert "hidden from the connection by firewall-blocked@host" in head
    alone = section_head(run_scenario(get_provider("sim"), LAB.scenario("rdp-disabled")))
    assert "rdplab-hidden" not in alone


def test_a_scenario_from_outside_draws_the_router_hop() -> None:
    """The sim model's verdict: the hop fails where the router drops the SYN (no forward);
    a LAN scenario has no hop."""
    net_lab = load_lab(REPO / "labs" / "network.yaml")
    run = run_scenario(get_provider("sim"), net_lab.scenario("port-forward-missing"))
    head = section_head(run)
    hops = re.findall(
        r'data-scenario="port-forward-missing" data-phase="(\w+)"'
        r'.*?data-hop="router" data-state="([\w-]+)"',
        head,
    )
    assert dict(hops) == {"before": "ok", "broken": "failed", "fixed": "ok"}
    assert 'data-hop="router"' not in section_head(
        run_scenario(get_provider("sim"), net_lab.scenario("healthy-lan"))
    )
    assert "rdplab-ladder" not in head  # packets are drawn only where packets ran (netns)


def test_the_ladder_marks_the_icmp_that_never_came() -> None:
    from rdplab.report_ladder import ladder_svg

    events = [
        {"t": 0.0, "src": "c", "dst": "h", "label": "SYN", "direction": "client->host"},
        {"t": 0.1, "src": "h", "dst": "c", "label": "SYN-ACK", "direction": "host->client"},
        {"t": 0.2, "src": "h", "dst": "c", "label": "TLS server flight (1294 bytes)",
         "direction": "host->client", "note": "not forwarded: too big for the link (1000)"},
    ]  # fmt: skip
    svg = ladder_svg(events, "s", "broken")
    assert svg.count("<g data-packet=") == 4 and 'data-never="true"' in svg
    assert 'data-packet="TLS server flight (1294 bytes)" data-dropped="true"' in svg
    assert 'data-never="true"' not in ladder_svg(events[:2], "s", "broken")
