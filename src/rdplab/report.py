"""Evidence for reports: each lab test row gets the evidence of its own aspect.

Rendered as small HTML fragments for pytest-html and as properties for JUnit XML.
"""

from __future__ import annotations

import html
import json
from typing import Any

from rdplab.connection import ConnectionResult
from rdplab.scenario import ScenarioRun


def _pre(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
    return f"<pre>{html.escape(text)}</pre>"


def _h(title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>"


def stages(conn: ConnectionResult | None) -> str:
    if conn is None:
        return "<p>(no connection attempt)</p>"
    rows = "".join(
        f"<tr><td>{'&#10004;' if s.ok else '&#10008;'}</td><td>{html.escape(s.name)}</td>"
        f"<td>{html.escape(s.detail)}</td></tr>"
        for s in conn.stages
    )
    verdict = (
        "connected"
        if conn.ok
        else f"failed at {conn.failed_stage}: error {conn.error_code},"
        f" extended {conn.extended_code}"
        + (
            f", negotiation failure 0x{conn.negotiation_failure:x}"
            if conn.negotiation_failure
            else ""
        )
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in conn.notes)
    return f"<p><b>{html.escape(verdict)}</b></p><table>{rows}</table>" + (
        f"<ul>{notes}</ul>" if notes else ""
    )


def ran_on(run: ScenarioRun) -> str:
    return f"<p><i>provider {html.escape(run.provider)}: {html.escape(run.runs_on)}</i></p>"


def evidence_html(run: ScenarioRun, aspect: str) -> str:
    """The evidence block for one test (aspect) of one scenario."""
    parts = [ran_on(run)]
    sc = run.scenario
    if sc.description:
        parts.append(f"<p>{html.escape(sc.description)}</p>")
    if run.error:
        parts.append(_h(f"scenario error at step {run.failed_step}") + _pre(run.error))
    if aspect in ("detect", "healthy"):
        parts.append(
            _h("break ops") + _pre({r: [str(o) for o in ops] for r, ops in run.break_ops.items()})
        )
        parts.append(_h("findings") + _pre([f.to_json() for f in run.findings]))
    if aspect in ("symptom", "healthy"):
        parts.append(_h("connection before the fix") + stages(run.connection))
    if run.skipped and aspect not in ("detect", "symptom", "calls"):
        parts.append(_h(f"skipped at step {run.skipped_step}") + _pre(run.skipped))
    if aspect in ("fix", "security", "healthy"):
        parts.append(fix_origin(run))
        if run.fix_scripts:
            parts.append(
                "<p>fix phases ran the exported remediation scripts: "
                + html.escape(", ".join(f"{r}: {n}" for r, n in sorted(run.fix_scripts.items())))
                + "</p>"
            )
        parts.append(_h("fix ops applied") + _pre(run.fix_ops()))
        parts.append(
            _h("fix results")
            + _pre({r: [x.to_json() for x in b.results] for r, b in run.fix_results.items()})
        )
        parts.append(_h("findings after the fix") + _pre([f.to_json() for f in run.findings_after]))
        parts.append(_h("connection after the fix") + stages(run.connection_after))
    if aspect == "security" or (aspect == "fix" and run.withheld):
        parts.append(_h("security") + _pre(security_notes(run)))
    if aspect == "idempotent":
        parts.append(
            _h("second fix run")
            + _pre({r: [x.to_json() for x in b.results] for r, b in run.fix_again_results.items()})
        )
    if aspect in ("collateral", "healthy"):
        parts.append(_h("state diff against the baseline") + _pre(run.diff))
        parts.append(_h("allowed to stay changed") + _pre(run.allowed))
    if aspect == "calls":
        parts.append(_h("remote calls per machine/phase") + _pre(run.calls))
    return "\n".join(parts)


def fix_origin(run: ScenarioRun) -> str:
    """Where the applied fix came from: the catalog, or the lab file (a scenario's own)."""
    own = run.scenario.fix
    if own is None:
        return "<p>fix: from the fault catalog</p>"
    what = f"script {own.script.name} on {own.on}" if own.script else "ops"
    return (
        f"<p><b>fix: from the lab file</b> ({html.escape(own.origin)}), {html.escape(what)};"
        " it replaces the catalog's fixes for this scenario</p>"
    )


def security_notes(run: ScenarioRun) -> list[str]:
    """The judge's verdict (from the state after the fix) and the labels' story."""
    notes = []
    if run.judged:
        opted = "scenario opted in" if run.scenario.allow_lowers_security else "NOT opted in"
        notes += [f"WEAKENED ({opted}): {w}" for w in run.weakened]
        if not run.weakened:
            notes.append("judge: no security setting is weaker than at the baseline")
    for af in run.fixes:
        if af.fix.risk == "lowers-security":
            notes.append(
                f"APPLIED {af.fault} fix '{af.fix.id}' LOWERS SECURITY (scenario opted in):"
                f" {af.fix.summary}"
            )
    for w in run.withheld:
        notes.append(
            f"not applied: {w.fault} fix '{w.fix.id}' lowers security and the scenario did not"
            f" opt in (allow_lowers_security: true): {w.fix.summary}"
        )
    return notes or ["no fix in this scenario lowers security"]


def properties(run: ScenarioRun) -> list[tuple[str, str]]:
    """JUnit properties for a scenario's tests."""
    conn = run.connection
    props = [
        ("provider", run.provider),
        ("ran_on", run.runs_on),
        ("findings", ", ".join(f"{f.fault}@{f.role}" for f in run.findings) or "none"),
        ("failed_stage", (conn.failed_stage or "none") if conn else "n/a"),
        ("fix_ops", json.dumps(run.fix_ops())),
        ("fix_origin", run.scenario.fix.origin if run.scenario.fix else "catalog"),
        ("unexpected_diff", json.dumps(run.unexpected_diff, default=str)),
        ("max_calls_per_machine_phase", str(run.max_calls_per_machine_phase)),
    ]
    props += [("security", n) for n in security_notes(run)]
    if run.error:
        props.append(("error", run.error))
    return props
