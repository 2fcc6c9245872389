"""Exercises in-process: the draw, the sealed state, grading, the views, the summary,
and the done-when check over 50 seeds through the same Typer entry point the ``rdplab``
script runs (tests/unit/test_exercise_cli.py runs a handful of seeds as subprocesses)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner

from rdplab import catalog as cat
from rdplab.cli import app
from rdplab.errors import RdplabError, UnknownFaultError
from rdplab.exercise import grade, pick, run, state, views
from rdplab.exercise.grade import grade_answer
from rdplab.exercise.pick import Cause
from rdplab.lab import load_lab

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
LAB = load_lab(LAB_FILE)
DIGEST = pick.lab_digest(LAB_FILE)
FAULT_IDS = sorted(cat.catalog())
FIX_IDS = sorted(grade.all_fix_ids())


#: the Click command ``rdplab`` runs, built once (Typer rebuilds it on every invoke: ~50 ms)
COMMAND = typer.main.get_command(app)


def invoke(*args: str) -> Any:
    old = typer.testing._get_command  # type: ignore[attr-defined]
    typer.testing._get_command = lambda _app: COMMAND  # type: ignore[attr-defined]
    try:
        return CliRunner().invoke(app, ["exercise", *args])
    finally:
        typer.testing._get_command = old  # type: ignore[attr-defined]


# -- the draw ------------------------------------------------------------------------------
def test_same_seed_count_and_lab_give_the_same_exercise() -> None:
    a = pick.draw(LAB, 7, 3, DIGEST)
    b = pick.draw(LAB, 7, 3, DIGEST)
    assert a[1] == b[1]
    assert pick.exercise_id(7, 3, DIGEST) == pick.exercise_id(7, 3, DIGEST)
    ids = {pick.exercise_id(s, 3, DIGEST) for s in range(20)}
    assert len(ids) == 20
    assert pick.exercise_id(7, 2, DIGEST) != pick.exercise_id(7, 3, DIGEST)
    assert pick.exercise_id(7, 3, DIGEST) != pick.exercise_id(7, 3, "0" * 64)


def test_draws_stay_within_the_fault_count_and_are_solvable() -> None:
    counts = set()
    for seed in range(15):
        scenario, causes, r = pick.draw(LAB, seed, 3, DIGEST)
        counts.add(len(causes))
        assert 1 <= len(causes) <= 3
        assert len({c.fault for c in causes}) == len(causes)
        assert {(f.fault, f.role) for f in r.findings} == {(c.fault, c.role) for c in causes}
        assert r.connection is not None and not r.connection.ok
        assert scenario.expected() == {(c.fault, c.role) for c in causes}
    assert counts == {1, 2, 3}  # one to K faults, not always K


def test_the_pool_is_what_the_lab_file_places(tmp_path: Path) -> None:
    lab_file = tmp_path / "labs" / "two.yaml"
    lab_file.parent.mkdir()
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")
    lab_file.write_text(
        "machines:\n  client: {baseline: windows-11}\n  host: {baseline: windows-server-2022}\n"
        "scenarios:\n  - {id: a, faults: [rdp-disabled]}\n"
        "  - {id: b, faults: [{fault: dns-stale-record, variant: cache}]}\n"
    )
    lab = load_lab(lab_file)
    seen = {c for s in range(10) for c in pick.draw(lab, s, 2, pick.lab_digest(lab_file))[1]}
    assert seen == {Cause("rdp-disabled", "host"), Cause("dns-stale-record", "client", "cache")}


def test_zero_faults_is_refused() -> None:
    with pytest.raises(RdplabError, match="--faults must be at least 1"):
        pick.draw(LAB, 1, 0, DIGEST)


# -- the state file ------------------------------------------------------------------------
def test_the_state_file_hides_the_answer(tmp_path: Path) -> None:
    for seed in range(5):
        made = run.new(LAB_FILE, seed, 3)
        path = tmp_path / f"{seed}.json"
        state.save(made.state, path)
        text = path.read_text()
        for word in [*FAULT_IDS, *FIX_IDS]:
            assert word not in text, (seed, word)
        loaded = state.load(path)
        causes, _ = run.sealed_causes(loaded, str(path))
        assert causes == made.causes


def test_an_edited_or_foreign_state_file_is_one_clear_error(tmp_path: Path) -> None:
    made = run.new(LAB_FILE, 3, 2)
    path = tmp_path / "exercise.json"
    state.save(made.state, path)
    data = json.loads(path.read_text())
    data["seed"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(state.StateError, match="does not open with this exercise's seed"):
        state.load(path).answer(str(path))
    path.write_text("[]")
    with pytest.raises(state.StateError, match="not an exercise state file"):
        state.load(path)
    with pytest.raises(state.StateError, match="no exercise here"):
        state.load(tmp_path / "missing.json")


# -- grading an answer ---------------------------------------------------------------------
TWO = [Cause("rdp-disabled", "host"), Cause("cert-revocation-unreachable", "client")]


def test_every_cause_and_a_safe_fix_scores_one() -> None:
    g = grade_answer(
        TWO,
        ["rdp-disabled@host", "cert-revocation-unreachable"],
        ["allow-connections", "make-crl-reachable"],
    )
    assert g.score == 1.0
    assert [c.verdict for c in g.causes] == ["found", "found"]
    assert [c.fix_verdict for c in g.causes] == ["safe", "safe"]
    assert g.hints == [] and g.wrong == []


@pytest.mark.parametrize(
    ("named", "fixes", "expect"),
    [
        ([], [], 0.0),
        (["rdp-disabled@host"], ["allow-connections"], 0.5),
        (["rdp-disabled@host", "cert-revocation-unreachable@client"], [], 0.5),
        (["rdp-disabled@client", "firewall-blocked"], [], 0.0),
        (
            ["rdp-disabled", "cert-revocation-unreachable"],
            ["allow-connections", "disable-revocation-check"],
            (0.5 + 0.5 + 0.5 + 0.25) / 2.5,
        ),
        (
            ["rdp-disabled", "cert-revocation-unreachable", "firewall-blocked"],
            ["allow-connections", "make-crl-reachable"],
            2 / 2.5,
        ),
        (
            ["rdp-disabled", "cert-revocation-unreachable"],
            ["allow-connections", "make-crl-reachable", "enable-rd-rules"],
            2 / 2.5,
        ),
    ],
    ids=["empty", "half", "causes-only", "wrong", "lowers-security", "extra-cause", "extra-fix"],
)
def test_empty_partial_or_wrong_answers_score_less(
    named: list[str], fixes: list[str], expect: float
) -> None:
    g = grade_answer(TWO, named, fixes)
    assert g.score == pytest.approx(expect, abs=0.001)
    assert g.score < 1.0


def test_verdicts_name_wrong_causes_risky_and_useless_fixes_and_hint_at_misses() -> None:
    g = grade_answer(
        TWO, ["firewall-blocked@host"], ["disable-revocation-check", "enable-rd-rules"]
    )
    assert g.wrong == ["firewall-blocked@host"]
    verdicts = {f["fix"]: f["verdict"] for f in g.fixes}
    assert verdicts == {
        "disable-revocation-check": "lowers-security",
        "enable-rd-rules": "not-a-fix",
    }
    assert [c.verdict for c in g.causes] == ["missed", "missed"]
    assert len(g.hints) == 2
    assert "on the host" in g.hints[0] and "inspect host registry" in g.hints[0]
    assert "on the client" in g.hints[1] and "tls stage" in g.hints[1]
    for h in g.hints:  # a hint points, it does not tell
        assert not any(f in h for f in FAULT_IDS)


def test_typos_are_errors_not_wrong_answers() -> None:
    with pytest.raises(UnknownFaultError, match="did you mean 'rdp-disabled'"):
        grade_answer(TWO, ["rdp-disabld"], [])
    with pytest.raises(RdplabError, match="role must be client, host or router"):
        grade_answer(TWO, ["rdp-disabled@server"], [])
    with pytest.raises(
        RdplabError, match=r"unknown fix id 'allow-conections' \(did you mean 'allow-connections'"
    ):
        grade_answer(TWO, [], ["allow-conections"])


# -- the views -----------------------------------------------------------------------------
def twin_for(fault: str, role: str, variant: str = "default") -> Any:
    scenario = pick.compose(LAB, "ex-test", [Cause(fault, role, variant)])  # type: ignore[arg-type]
    r = run.rebuild(scenario)
    return r.lab


def test_reg_query_layout() -> None:
    lab = twin_for("listener-port-changed", "host")
    text = views.registry(
        lab.host.twin, r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp"
    )
    lines = text.splitlines()
    assert lines[0].startswith('PS C:\\> reg query "HKEY_LOCAL_MACHINE\\SYSTEM')
    assert lines[2] == (
        r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp"
    )
    port = next(line for line in lines if "PortNumber" in line)
    assert port.startswith("    PortNumber    REG_DWORD    0x")
    assert int(port.rsplit("0x", 1)[1], 16) != 3389
    with pytest.raises(views.ViewError, match="unable to find the specified registry key") as e:
        views.registry(lab.host.twin, r"HKLM\SOFTWARE\Nope")
    assert e.value.exit_code == 1
    top = views.registry(lab.host.twin, r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server")
    assert top.rstrip().endswith(r"Terminal Server\WinStations")  # subkeys listed last


def test_views_show_each_kind_of_break() -> None:
    fw = views.firewall(twin_for("firewall-blocked", "host").host.twin, "Remote Desktop")
    assert "Name         : RemoteDesktop-UserMode-In-TCP" in fw
    assert "Enabled      : False" in fw
    svc = views.services(twin_for("termservice-stopped", "host").host.twin)
    assert any(
        line.split()[:3] == ["Stopped", "Disabled", "TermService"] for line in svc.splitlines()
    )
    certs = views.certificates(twin_for("rdp-cert-corrupt", "host").host.twin)
    assert "does not open (corrupt)" in certs and "Thumbprint    : " in certs
    dns = views.dns(twin_for("dns-stale-record", "client").client.twin)
    assert any(line.split() == ["192.168.56.99", "host.rdplab.test"] for line in dns.splitlines())
    lic = views.licensing(twin_for("licensing-cache-stale", "client").client.twin)
    assert lic.startswith(
        'PS C:\\> reg query "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\MSLicensing" /s'
    )
    up = views.updates(twin_for("rdp-disabled", "host").host.twin)
    assert "tspkg.dll" in up


def test_inspect_command_errors() -> None:
    assert invoke("inspect", "server", "registry").exit_code == 2
    r = invoke("inspect", "host", "eventlog")
    assert r.exit_code == 2 and "unknown area 'eventlog'" in r.stderr


# -- the done-when check over 50 seeds ------------------------------------------------------
def answer_args(answer: dict[str, Any]) -> list[str]:
    causes = [f"{c['fault']}@{c['role']}" for c in answer["causes"]]
    return causes + [x for f in answer["fixes"] for x in ("--fix", f)]


def test_fifty_seeds_revealed_answers_score_one_and_others_less(tmp_path: Path) -> None:
    st = str(tmp_path / "exercise.json")
    res = str(tmp_path / "answer.json")

    def score(*args: str) -> float:
        out = invoke("answer", *args, "--state", st, "--json", "--out", res)
        assert out.exit_code == 0, out.output
        return float(json.loads(out.stdout)["score"])

    for seed in range(50):
        # new without --reveal never prints a fault id (as text; as JSON every 5th seed)
        plain = invoke("new", "--seed", str(seed), "--faults", "3", "--state", st)
        assert plain.exit_code == 0, plain.output
        shown = plain.stdout
        if seed % 5 == 0:
            shown += invoke(
                "new", "--seed", str(seed), "--faults", "3", "--state", st, "--json"
            ).stdout
        for word in FAULT_IDS:
            assert word not in shown, (seed, word)
        r = invoke("new", "--seed", str(seed), "--faults", "3", "--state", st, "--json", "--reveal")
        answer = json.loads(r.stdout)["answer"]
        assert score(*answer_args(answer)) == 1.0, seed
        # an empty, partial or wrong answer scores less (one kind per seed, in turn)
        wrong = next(f for f in FAULT_IDS if f not in {c["fault"] for c in answer["causes"]})
        less = [
            [],
            answer_args(dict(answer, fixes=[])),
            answer_args(dict(answer, causes=answer["causes"][1:])),
            [*answer_args(answer), wrong],
            [wrong],
        ][seed % 5]
        assert score(*less) < 1.0, (seed, less)


# -- the trainer's summary ------------------------------------------------------------------
def test_report_summarises_result_files(tmp_path: Path) -> None:
    st = str(tmp_path / "exercise.json")
    folder = tmp_path / "class"
    made = json.loads(invoke("new", "--seed", "11", "--state", st, "--json", "--reveal").stdout)
    full = answer_args(made["answer"])
    for trainee, args in [("ana", full), ("ben", []), ("cy", full[:1])]:
        r = invoke(
            "answer",
            *args,
            "--state",
            st,
            "--trainee",
            trainee,
            "--out",
            str(folder / f"{trainee}.json"),
        )
        assert r.exit_code == 0, r.output
    (folder / "notes.json").write_text('{"not": "a result"}')
    r = invoke("report", str(folder))
    assert r.exit_code == 0, r.output
    assert "skipped" in r.stderr and "notes.json" in r.stderr
    rows = list(csv.DictReader((folder / "exercise-report.csv").open()))
    assert {row["trainee"]: float(row["score"]) for row in rows}["ana"] == 1.0
    assert {row["trainee"] for row in rows} == {"ana", "ben", "cy"}
    assert float(next(r for r in rows if r["trainee"] == "ben")["score"]) == 0.0
    page = (folder / "exercise-report.html").read_text()
    assert page.count(f'data-exercise="{made["exercise"]}"') == 3
    assert "Causes missed most often" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("report", str(empty))
    assert r.exit_code == 2 and "no result files" in r.stderr
