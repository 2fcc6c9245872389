"""Evidence for reports: each lab test row gets the evidence of its own aspect.

Rendered as small HTML fragments for pytest-html and as properties for JUnit XML.
"""

from __future__ import annotations

import html
import json
from typing import Any

from rdplab.catalog.base import Finding
from rdplab.connection import ConnectionResult
from rdplab.ops import BatchResult
from rdplab.scenario import ScenarioRun, allowed


def _e(value: Any) -> str:
    return html.escape(str(value))


def _h(title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>"


def _value(value: Any) -> str:
    """A value for a table cell: plain text, a nested mapping or list as small lines."""
    if value is None:
        return "<i>absent</i>"
    if isinstance(value, dict):
        return "<br>".join(f"{_e(k)}: {_value(v)}" for k, v in value.items()) or "<i>empty</i>"
    if isinstance(value, list | tuple):
        return "<br>".join(_value(v) for v in value) or "<i>none</i>"
    return _e(value)


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]], empty: str = "none") -> str:
    """An HTML table (cells escaped; nested values as lines)."""
    if not rows:
        return f"<p><i>{html.escape(empty)}</i></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_value(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="rdplab-table"><tr>{head}</tr>{body}</table>'


def findings_table(findings: list[Finding]) -> str:
    return table(
        ("fault", "machine", "finding", "evidence"),
        [(f.fault, f.role, f.summary, dict(f.evidence)) for f in findings],
        "no finding",
    )


def ops_table(plan: dict[str, list[Any]]) -> str:
    return table(
        ("machine", "op"),
        [(role, str(op)) for role, ops in plan.items() for op in ops],
        "no op",
    )


def results_table(results: dict[str, BatchResult]) -> str:
    return table(
        ("machine", "op", "changed", "detail", "backup", "error"),
        [
            (role, x.op, "yes" if x.changed else "no", x.detail, x.backup or "", x.error or "")
            for role, batch in results.items()
            for x in batch.results
        ],
        "nothing ran",
    )


def diff_table(run: ScenarioRun) -> str:
    return table(
        ("machine", "setting", "before (baseline)", "after", "source"),
        [
            (
                role,
                path,
                before,
                after,
                "declared by a fault or fix"
                if allowed(f"{role}:{path}", run.allowed)
                else "NOT declared (collateral)",
            )
            for role, changes in run.diff.items()
            for path, before, after in changes
        ],
        "no difference from the baseline",
    )


def stages(conn: ConnectionResult | None) -> str:
    if conn is None:
        return "<p>(no connection attempt)</p>"
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
    rows = [("&#10004;" if s.ok else "&#10008;", s.name, s.detail) for s in conn.stages]
    body = "".join(
        f"<tr><td>{mark}</td><td>{_e(name)}</td><td>{_e(detail)}</td></tr>"
        for mark, name, detail in rows
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in conn.notes)
    return (
        f"<p><b>{html.escape(verdict)}</b></p>"
        f'<table class="rdplab-table"><tr><th></th><th>stage</th><th>detail</th></tr>{body}</table>'
        + (f"<ul>{notes}</ul>" if notes else "")
    )


def ran_on(run: ScenarioRun) -> str:
    return f"<p><i>provider {html.escape(run.provider)}: {html.escape(run.runs_on)}</i></p>"


def evidence_html(run: ScenarioRun, aspect: str) -> str:
    """The evidence block for one test (aspect) of one scenario, as tables."""
    parts = [ran_on(run)]
    sc = run.scenario
    if sc.description:
        parts.append(f"<p>{html.escape(sc.description)}</p>")
    if run.error:
        parts.append(_h(f"scenario error at step {run.failed_step}") + f"<p>{_e(run.error)}</p>")
    if aspect in ("detect", "healthy"):
        parts.append(_h("break ops") + ops_table(run.break_ops))
        parts.append(_h("findings") + findings_table(run.findings))
    if aspect in ("symptom", "healthy"):
        parts.append(_h("connection before the break") + stages(run.connection_before))
        parts.append(_h("connection after the break") + stages(run.connection))
    if run.skipped and aspect not in ("detect", "symptom", "calls"):
        parts.append(_h(f"skipped at step {run.skipped_step}") + f"<p>{_e(run.skipped)}</p>")
    if aspect in ("fix", "security", "healthy"):
        parts.append(fix_origin(run))
        if run.fix_scripts:
            parts.append(
                "<p>fix phases ran the exported remediation scripts: "
                + html.escape(", ".join(f"{r}: {n}" for r, n in sorted(run.fix_scripts.items())))
                + "</p>"
            )
        parts.append(_h("fix ops applied") + ops_table(run.fix_ops()))
        parts.append(_h("fix results") + results_table(run.fix_results))
        parts.append(_h("findings after the fix") + findings_table(run.findings_after))
        parts.append(_h("connection after the fix") + stages(run.connection_after))
    if aspect == "security" or (aspect == "fix" and run.withheld):
        notes = "".join(f"<li>{_e(n)}</li>" for n in security_notes(run))
        parts.append(_h("security") + f"<ul>{notes}</ul>")
    if aspect == "idempotent":
        parts.append(_h("second fix run") + results_table(run.fix_again_results))
    if aspect in ("collateral", "healthy"):
        parts.append(_h("state diff against the baseline") + diff_table(run))
        parts.append(
            _h("allowed to stay changed")
            + table(("pattern",), [(p,) for p in run.allowed], "nothing")
        )
    if aspect == "calls":
        parts.append(
            _h("remote calls per machine and phase")
            + table(
                ("machine", "phase", "calls"),
                [(*key.split("/", 1), n) for key, n in sorted(run.calls.items())],
                "no remote call",
            )
        )
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
