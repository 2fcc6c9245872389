"""What ``rdplab diagnose`` and ``rdplab fix`` report, from a ``ScenarioRun`` of the
DIAGNOSE steps: the verdict, the connection stage by stage with the codes the user saw,
each finding with its evidence, and for each finding its fixes with their risk and the
command that applies one. One document, printed as text, as JSON or as an HTML page."""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Sequence
from typing import Any

from rdplab import catalog as cat
from rdplab.catalog.base import STAGES, Finding
from rdplab.connection import ConnectionResult
from rdplab.lab import unreached_past
from rdplab.scenario import ScenarioRun, offered_fixes


def verdict(findings: Sequence[Finding], conn: ConnectionResult | None) -> str:
    if not findings and conn is not None and conn.ok:
        return "healthy: nothing is flagged and the connection gets through"
    parts = [f"{len(findings)} finding(s)" if findings else "nothing flagged"]
    if conn is not None and not conn.ok:
        codes = (
            f" (error {conn.error_code}, extended {conn.extended_code})" if conn.error_code else ""
        )
        parts.append(f"the connection fails at {conn.failed_stage}{codes}")
    elif conn is not None:
        parts.append("the connection gets through")
    return "broken: " + "; ".join(parts)


def connection_json(conn: ConnectionResult | None) -> dict[str, Any] | None:
    if conn is None:
        return None
    return {
        "ok": conn.ok,
        "failed_stage": conn.failed_stage,
        "error_code": conn.error_code,
        "extended_code": conn.extended_code,
        "negotiation_failure": conn.negotiation_failure,
        "credssp_version": conn.credssp_version,
        "stages": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in conn.stages],
        "not_probed": dict(conn.not_probed),
        "notes": list(conn.notes),
    }


def fixes_json(findings: Sequence[Finding], run: ScenarioRun, source: Sequence[str]) -> list[Any]:
    """Every fix each finding offers, with its risk, ops and the command that applies it."""
    out = []
    for f in findings:
        for af in offered_fixes(f, run.scenario):
            command = ["rdplab", "fix", *source, "--fault", f.fault, "--fix", af.fix.id]
            if af.fix.risk == "lowers-security":
                command.append("--allow-lower-security")
            out.append(
                {
                    "fault": f.fault,
                    "role": f.role,
                    "fix": af.fix.id,
                    "risk": af.fix.risk,
                    "summary": af.fix.summary,
                    "ops": {role: [str(o) for o in ops] for role, ops in af.ops.items()},
                    "command": shlex.join(command),
                }
            )
    return out


def findings_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "fault": f.fault,
            "role": f.role,
            "title": cat.get(f.fault).title,
            "summary": f.summary,
            "evidence": dict(f.evidence),
        }
        for f in findings
    ]


def hidden_json(
    findings: Sequence[Finding], conn: ConnectionResult | None, run: ScenarioRun
) -> list[dict[str, Any]]:
    """What is hidden, and by what: never silent.

    - hidden from the connection: a finding whose fault breaks a later stage than the one
      the connection fails at (fix the earlier one first, then the connection meets it);
    - hidden from the detectors: on the sim, the scenario's placed faults the catalog
      declares hidden (``Fault.hides``); on real machines, what a found fault may hide
      (``possible``: it cannot be seen until that fault is fixed)."""
    out: list[dict[str, Any]] = []
    failed = conn.failed_stage if conn is not None and not conn.ok else None
    if failed in STAGES:
        found = [(f"{f.fault}@{f.role}", cat.get(f.fault).symptom.stage) for f in findings]
        out.extend(m.to_json() for m in unreached_past(str(failed), found))
    if run.provider == "sim" and run.scenario.faults:
        out.extend(m.to_json() for m in run.scenario.hidden().values())
    else:
        for f in findings:
            for h in cat.get(f.fault).hides:
                out.append(
                    {
                        "fault": h.fault + (f"@{h.on}" if h.on else ""),
                        "by": [f"{f.fault}@{f.role}"],
                        "kind": "detectors",
                        "reason": h.reason,
                        "possible": True,
                    }
                )
    return out


def diagnosis_json(
    run: ScenarioRun, source: Sequence[str], *, after: bool = False
) -> dict[str, Any]:
    """The ``--json`` document of ``rdplab diagnose`` (``after``: of the verify steps)."""
    findings = run.findings_after if after else run.findings
    conn = run.connection_after if after else run.connection
    return {
        "ok": run.error is None and not findings and conn is not None and conn.ok,
        "verdict": run.error or verdict(findings, conn),
        "provider": run.provider,
        "runs_on": run.runs_on,
        "scenario": run.scenario.id if run.provider == "sim" else None,
        "findings": findings_json(findings),
        "connection": connection_json(conn),
        "fixes": fixes_json(findings, run, source),
        "hidden": hidden_json(findings, conn, run),
        "calls": dict(run.calls),
        "error": run.error,
    }


def print_diagnosis(doc: dict[str, Any], console: Any, title: str = "Diagnosis") -> None:
    """The document as text, for people."""
    color = "green" if doc["ok"] else "red"
    console.rule(f"[bold]{title}[/]: {doc['runs_on']}")
    console.print(f"[bold {color}]{doc['verdict']}[/]", highlight=False, soft_wrap=True)
    conn = doc["connection"]
    if conn is not None:
        console.print("\n[bold]The connection[/]")
        for s in conn["stages"]:
            mark = "[green]ok[/]  " if s["ok"] else "[red]FAIL[/]"
            console.print(
                f"  {mark} {s['name']:16s} {s['detail']}", highlight=False, soft_wrap=True
            )
        if conn["negotiation_failure"] is not None:
            console.print(f"  RDP_NEG_FAILURE code {conn['negotiation_failure']}")
        for stage, why in conn["not_probed"].items():
            console.print(f"  [dim]not probed: {stage} ({why})[/]", soft_wrap=True)
    if doc["hidden"]:
        console.print("\n[bold]Hidden[/] (each shows once what hides it is fixed)")
    for h in doc["hidden"]:
        may = "may be hidden" if h.get("possible") else "is hidden"
        console.print(
            f"  {h['fault']} {may} from the {h['kind']} by {', '.join(h['by'])}: {h['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    if doc["findings"]:
        console.print("\n[bold]Findings[/]")
    for f in doc["findings"]:
        console.print(
            f"  [bold]{f['fault']}[/] on {f['role']}: {f['summary']}",
            highlight=False,
            soft_wrap=True,
        )
        for key, value in f["evidence"].items():
            console.print(f"      {key}: {value}", highlight=False, soft_wrap=True)
        for fx in doc["fixes"]:
            if (fx["fault"], fx["role"]) != (f["fault"], f["role"]):
                continue
            tag = "[green]safe[/]" if fx["risk"] == "safe" else "[red]lowers security[/]"
            console.print(f"    fix {fx['fix']} ({tag}): {fx['summary']}", soft_wrap=True)
            console.print(f"      [cyan]{fx['command']}[/]", highlight=False, soft_wrap=True)


def diagnosis_html(doc: dict[str, Any], title: str = "rdplab diagnose") -> str:
    """The same document as one self-contained HTML page."""
    e = html.escape
    conn = doc["connection"]
    parts = [
        f"<h1>{e(title)}</h1>",
        f"<p><i>provider {e(doc['provider'])}: {e(doc['runs_on'])}</i></p>",
        f"<p class='{'ok' if doc['ok'] else 'bad'}'><b>{e(doc['verdict'])}</b></p>",
        "<h2>The connection</h2>",
    ]
    if conn is None:
        parts.append("<p>(no connection attempt)</p>")
    else:
        rows = "".join(
            f"<tr><td>{'&#10004;' if s['ok'] else '&#10008;'}</td><td>{e(s['name'])}</td>"
            f"<td>{e(s['detail'])}</td></tr>"
            for s in conn["stages"]
        )
        parts.append(f"<table>{rows}</table>")
        notes = [*conn["notes"], *(f"{k}: not probed ({v})" for k, v in conn["not_probed"].items())]
        if notes:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if doc["hidden"]:
        parts.append("<h2>Hidden</h2><ul>")
        parts.extend(
            f"<li>{e(h['fault'])} hidden from the {e(h['kind'])} by {e(', '.join(h['by']))}:"
            f" {e(h['reason'])}</li>"
            for h in doc["hidden"]
        )
        parts.append("</ul>")
    parts.append(f"<h2>Findings ({len(doc['findings'])})</h2>")
    for f in doc["findings"]:
        parts.append(
            f"<h3>{e(f['fault'])} on {e(f['role'])}</h3><p>{e(f['title'])}: {e(f['summary'])}</p>"
            f"<pre>{e(json.dumps(f['evidence'], indent=2, default=str))}</pre>"
        )
        fixes = [x for x in doc["fixes"] if (x["fault"], x["role"]) == (f["fault"], f["role"])]
        rows = "".join(
            f"<tr><td>{e(x['fix'])}</td><td class='{x['risk']}'>{e(x['risk'])}</td>"
            f"<td>{e(x['summary'])}</td><td><code>{e(x['command'])}</code></td></tr>"
            for x in fixes
        )
        parts.append(
            "<table><tr><th>fix</th><th>risk</th><th>what it does</th><th>apply it</th></tr>"
            f"{rows}</table>"
        )
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:1em auto}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}"
        "table{border-collapse:collapse}.ok{color:#060}.bad{color:#a00}"
        ".lowers-security{color:#a00}pre{background:#f4f4f4;padding:.5em}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


__all__ = [
    "connection_json",
    "diagnosis_html",
    "diagnosis_json",
    "print_diagnosis",
    "verdict",
]
