"""rdplab exercise new|inspect|answer|check|report: graded exercises for trainees.

The logic lives in ``rdplab.exercise``; this module parses, prints and writes files.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rdplab.cli.app import app, err, fail, out
from rdplab.errors import RdplabError
from rdplab.exercise.state import DEFAULT_STATE

exercise_app = typer.Typer(
    name="exercise",
    help="Graded exercises: a broken lab to diagnose, graded answers and repairs.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(exercise_app)

StateOpt = Annotated[
    Path, typer.Option("--state", help="The exercise's state file.", show_default=True)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
RESULT_KIND = "rdplab-exercise-result"


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _site(machines: dict[str, Any]) -> str:
    """Where the user dials from, when it is not the LAN."""
    site = machines["client"].get("site", "lan")
    if site == "outside":
        return f" from outside, through the router {machines['router']['outside_address']}"
    return " over a VPN" if site == "vpn" else ""


DEFAULT_NETLAB = Path(".rdplab/netlab.json")
NetlabStateOpt = Annotated[
    Path, typer.Option(help="With --network: the running network lab's state file.")
]


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@exercise_app.command()
def new(
    seed: Annotated[
        int | None, typer.Option(help="Same seed, fault count and lab file: same exercise.")
    ] = None,
    faults: Annotated[int, typer.Option("--faults", help="At most this many faults.")] = 2,
    lab_file: Annotated[Path, typer.Option(help="Lab definition (YAML).")] = Path(
        "labs/rdp-0x904.yaml"
    ),
    state: StateOpt = DEFAULT_STATE,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Also print the answer (for trainers and tests).")
    ] = False,
    lab_provider: Annotated[
        str | None,
        typer.Option(help="sim (default), or a real lab: inventory, vagrant (the lab suite's)."),
    ] = None,
    lab_inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            "--lab-inventory",
            help="Real machines: an inventory file (docs/real-windows.md); implies inventory.",
        ),
    ] = None,
    network: Annotated[
        bool,
        typer.Option(
            "--network",
            help="Then keep the exercise's network up as Linux namespaces (root) until"
            " Ctrl+C: rdplab netlab shell client|router to look and repair, rdplab exercise"
            " check --network to grade.",
        ),
    ] = False,
    netlab_state: NetlabStateOpt = DEFAULT_NETLAB,
    as_json: JsonOpt = False,
) -> None:
    """Pick a scenario, break it, and show what the user reports."""
    from rdplab.exercise import grade, run

    if seed is None:
        seed = secrets.randbelow(2**31)
    if lab_provider is None:
        lab_provider = "inventory" if lab_inventory else "sim"
    options = {"inventory": str(lab_inventory.resolve())} if lab_inventory else {}
    if lab_provider != "sim":
        options["root"] = str(Path.cwd())
        err.print(f"breaking the exercise on the {lab_provider} lab...", highlight=False)
    try:
        made = run.new(lab_file, seed, faults, lab_provider, options)
        from rdplab.exercise.state import save

        save(made.state, state)
    except RdplabError as exc:
        fail(exc)
    st = made.state
    data: dict[str, Any] = {
        "exercise": st.exercise,
        "seed": st.seed,
        "faults": st.faults,
        "lab_file": str(lab_file),
        "provider": st.provider,
        "symptom": st.symptom,
        "state": str(state),
    }
    if reveal:
        data["answer"] = grade.revealed(made.causes)
    if network and made.scenario.network.router is None:
        fail(f"--network: {lab_file} has no router (network.router): nothing to build")
    if as_json:
        _emit(data)
    else:
        _print_new(data, st, lab_file, state, reveal)
    if network:
        from rdplab.cli.serve import serve_network

        sys.stdout.flush()
        serve_network(made.scenario, lab_file, False, netlab_state)


def _print_new(data: dict[str, Any], st: Any, lab_file: Path, state: Path, reveal: bool) -> None:
    sym = st.symptom
    m = sym["machines"]
    out.rule(f"[bold]Exercise {st.exercise}[/] (seed {st.seed}, up to {st.faults} faults)")
    where = "in-process sim twins" if st.provider == "sim" else f"the {st.provider} lab"
    out.print(f"Lab file {lab_file}, on {where}.", highlight=False)
    out.print(
        f"\nA user on [bold]{m['client']['name']}[/] ({m['client']['address']}) connects to"
        f" [bold]{m['host']['dialed']}[/] ({m['host']['name']}"
        + (", RDP over WebSocket" if m["host"]["transport"] == "websocket" else "")
        + ")"
        + _site(m)
        + " and reports:",
        highlight=False,
    )
    out.print(f"  {sym['message']}\n", highlight=False)
    if st.provider == "sim":
        out.print(
            "Look around:  rdplab exercise inspect client|host"
            " registry|firewall|services|certificates|dns|licensing|updates \\[ARG]",
            highlight=False,
        )
    else:
        out.print(
            "Look around on the machines themselves, repair them, then: rdplab exercise check"
        )
    out.print(
        "Then answer:  rdplab exercise answer FAULT\\[@ROLE]... --fix FIX_ID..."
        "  (`rdplab list`, `rdplab explain FAULT`)",
        highlight=False,
    )
    out.print(f"State saved to {state}", highlight=False, markup=False, soft_wrap=True)
    if reveal:
        a = data["answer"]
        causes = ", ".join(f"{c['fault']}@{c['role']}" for c in a["causes"])
        out.print(f"\n[bold]Answer[/] (trainer): {causes}; safe fixes: {', '.join(a['fixes'])}")


def _open(state: Path) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    from rdplab.exercise import run
    from rdplab.exercise.state import load

    st = load(state)
    scenario, causes, sealed = run.reopen(st, str(state))
    return st, scenario, causes, sealed


@exercise_app.command()
def inspect(
    role: Annotated[str, typer.Argument(help="client, host, or router (a lab with one).")],
    area: Annotated[
        str,
        typer.Argument(
            help="registry, firewall, services, certificates, dns, licensing, updates, ip;"
            " on the router: ruleset, links, dhcp."
        ),
    ],
    arg: Annotated[str | None, typer.Argument(help="What to look at in the area.")] = None,
    recurse: Annotated[
        bool, typer.Option("--recurse", "-s", help="registry: the key and all keys below (/s).")
    ] = False,
    state: StateOpt = DEFAULT_STATE,
) -> None:
    """Read-only views of a sim machine, as Windows tools print them."""
    from rdplab.exercise import router_views, run, views

    if role not in ("client", "host", "router"):
        fail(f"role must be client, host or router (got {role!r})")
    areas = router_views.ROUTER_AREAS if role == "router" else views.AREAS
    if area not in areas:
        fail(f"unknown area {area!r} for the {role} (areas: {', '.join(areas)})")
    try:
        st, scenario, _causes, _sealed = _open(state)
        if st.provider != "sim":
            fail(
                f"exercise {st.exercise} runs on the {st.provider} lab: look on the machine"
                " itself (reg query, Get-NetFirewallRule, Get-Service, ...)"
            )
        lab = run.rebuild(scenario).lab
        if role == "router":
            if lab.router is None:
                fail(f"exercise {st.exercise}: its lab has no router (network.router)")
            text = router_views.ROUTER_AREAS[area][0](lab.router.twin, arg)  # type: ignore[attr-defined]
            sys.stdout.write(text)
            return
        machine = lab.backend("client" if role == "client" else "host")
        twin = machine.twin  # type: ignore[attr-defined]
        if area == "registry":
            text = views.registry(twin, arg, recurse)
        else:
            text = views.AREAS[area][0](twin, arg)
    except views.ViewError as exc:
        sys.stdout.write(exc.message + "\n")
        raise typer.Exit(exc.exit_code) from None
    except RdplabError as exc:
        fail(exc)
    sys.stdout.write(text)


def _result_path(out_path: Path | None, state: Path, name: str) -> Path:
    return out_path or state.with_name(name)


def _write_result(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot write the result ({exc.strerror})")


TraineeOpt = Annotated[
    str | None, typer.Option("--trainee", help="Name in the result file (default: your login).")
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Result file for the trainer (default: beside the state file)."),
]


@exercise_app.command()
def answer(
    causes: Annotated[
        list[str] | None, typer.Argument(help="Causes: FAULT or FAULT@ROLE.", show_default=False)
    ] = None,
    fix: Annotated[
        list[str] | None, typer.Option("--fix", help="A fix id for a cause (repeat the option).")
    ] = None,
    state: StateOpt = DEFAULT_STATE,
    trainee: TraineeOpt = None,
    out_path: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grade a diagnosis: each cause found, missed or wrong; each fix; a score."""
    from rdplab.exercise.grade import grade_answer
    from rdplab.exercise.run import sealed_causes
    from rdplab.exercise.state import load

    try:
        st = load(state)
        real, _sealed = sealed_causes(st, str(state))
        g = grade_answer(real, list(causes or []), list(fix or []))
    except RdplabError as exc:
        fail(exc)
    result = {
        "kind": RESULT_KIND,
        "mode": "answer",
        "trainee": trainee or getpass.getuser(),
        "exercise": st.exercise,
        "seed": st.seed,
        "faults": st.faults,
        "provider": st.provider,
        "submitted": _now(),
        "answered": {"causes": list(causes or []), "fixes": list(fix or [])},
        **g.to_json(),
    }
    path = _result_path(out_path, state, "answer.json")
    _write_result(path, result)
    if as_json:
        _emit(result)
        return
    out.rule(f"[bold]Exercise {st.exercise}[/]: score {g.score:.2f}")
    fixv = {"safe": "[green]safe fix[/]", "lowers-security": "[yellow]fix lowers security[/]"}
    for c in g.causes:
        # a found cause is named (the trainee named it); a missed one only gets its hint
        mark = f"[green]found[/] {c.fault}@{c.role}" if c.verdict == "found" else "[red]missed[/]"
        out.print(
            f"  cause {mark}; fix: {fixv.get(c.fix_verdict, '[red]no fix chosen[/]')}",
            highlight=False,
        )
    for w in g.wrong:
        out.print(f"  [red]wrong[/] cause: {w}", highlight=False)
    for f in g.fixes:
        if f["verdict"] == "not-a-fix":
            out.print(f"  [red]not a fix[/] for any cause here: {f['fix']}", highlight=False)
        elif f["verdict"] == "lowers-security":
            out.print(f"  [yellow]lowers security[/]: {f['fix']}", highlight=False)
    for h in g.hints:
        out.print(f"  hint: {h}", highlight=False)
    out.print(f"Result written to {path}", highlight=False, markup=False, soft_wrap=True)


@exercise_app.command()
def check(
    state: StateOpt = DEFAULT_STATE,
    trainee: TraineeOpt = None,
    out_path: OutOpt = None,
    as_json: JsonOpt = False,
    network: Annotated[
        bool,
        typer.Option(
            "--network",
            help="Grade a repair made in the running network lab (exercise new --network):"
            " the router's real state and a real connection from the client's namespace.",
        ),
    ] = False,
    netlab_state: NetlabStateOpt = DEFAULT_NETLAB,
) -> None:
    """Grade a repair made by hand on a real lab, from the machines' state."""
    from rdplab.exercise import run
    from rdplab.exercise.grade import grade_repair

    try:
        st, scenario, causes, sealed = _open(state)
        if network:
            from rdplab.exercise import network as net_exercise
            from rdplab.netlab import session as ns

            r = net_exercise.check(scenario, ns.read(netlab_state))
            graded = grade_repair(r, causes)
        elif st.provider == "sim":
            fail(
                f"exercise {st.exercise} is on the sim: its twins live in-process and cannot"
                " be repaired by hand; grade the diagnosis with `rdplab exercise answer`"
            )
        else:
            err.print(f"checking the {st.provider} lab...", highlight=False)
            r = run.check(st, scenario, sealed)
            graded = grade_repair(r, causes)
    except RdplabError as exc:
        fail(exc)
    result = {
        "kind": RESULT_KIND,
        "mode": "check",
        "trainee": trainee or getpass.getuser(),
        "exercise": st.exercise,
        "seed": st.seed,
        "faults": st.faults,
        "provider": st.provider,
        "submitted": _now(),
        **graded,
    }
    path = _result_path(out_path, state, "check.json")
    _write_result(path, result)
    if as_json:
        _emit(result)
        return
    out.rule(f"[bold]Exercise {st.exercise}[/]: repair score {graded['score']:.2f}")
    for c in graded["causes"]:
        ok = c["verdict"] == "repaired"
        mark = "[green]repaired[/]" if ok else "[red]still broken[/]"
        out.print(f"  {c['fault']}@{c['role']}: {mark}", highlight=False)
    conn = graded["connection"]
    out.print(
        "  connection: "
        + ("[green]succeeds[/]" if conn["ok"] else f"[red]fails at {conn['failed_stage']}[/]")
    )
    for role, changes in graded["unexpected_changes"].items():
        for ch in changes:
            out.print(
                f"  [red]changed beyond the fixes[/] {role}: {ch['setting']}", highlight=False
            )
    for f in graded["new_findings"]:
        out.print(f"  [red]now broken[/]: {f['fault']}@{f['role']}", highlight=False)
    for s in graded["security_lowered"]:
        out.print(
            f"  [red]security lowered[/] {s['role']}: {s['setting']} {s['before']} -> {s['after']}",
            highlight=False,
        )
    out.print(f"  (security judged by {graded['security_basis']})", highlight=False)
    out.print(f"Result written to {path}", highlight=False, markup=False, soft_wrap=True)


@exercise_app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="Folder of trainees' result files.")],
    html: Annotated[
        Path | None, typer.Option(help="HTML page (default: DIR/exercise-report.html).")
    ] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="CSV (default: DIR/exercise-report.csv).")
    ] = None,
) -> None:
    """Summarise many trainees' result files into one HTML page and a CSV."""
    from rdplab.exercise import summary

    try:
        results, skipped = summary.collect(directory)
        html = html or directory / "exercise-report.html"
        csv_path = csv_path or directory / "exercise-report.csv"
        summary.write(results, html, csv_path)
    except RdplabError as exc:
        fail(exc)
    for s in skipped:
        err.print(f"skipped {s}", highlight=False, markup=False, soft_wrap=True)
    out.print(
        f"{len(results)} result(s) -> {html}, {csv_path}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
