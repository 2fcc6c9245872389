"""The readable part of reports/lab.html: a scenario-by-aspect matrix at the top (a row
per scenario, a coloured cell per aspect linking to its evidence), then a section per
scenario with its connection drawn stage by stage as inline SVG (before the break, after
the break with the failing stage in red and its codes, after the fix), the settings that
changed as a table (setting, before the break, after the break, after the fix, source)
and each aspect's evidence. Each scenario's section, matrix row and diagrams carry
``data-scenario="<scenario id>"``.

Pure functions from a ``ScenarioRun`` (and the test outcomes) to HTML; the pytest plugin
puts them into pytest-html's summary (plugin.py, ``pytest_html_results_summary``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from rdplab.backends.base import snapshot_from_facts
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult
from rdplab.ops import Op, render_op
from rdplab.report_ladder import ladder_svg, router_hop_state
from rdplab.scenario import ScenarioRun, allowed, flatten

#: the connection stages in the order a client meets them, with their labels
STAGES: tuple[tuple[str, str], ...] = (
    ("name-resolution", "name resolution"),
    ("tcp", "TCP"),
    ("x224", "X.224"),
    ("tls", "TLS"),
    ("credssp", "CredSSP"),
    ("licensing", "licensing"),
)
#: the lab suite's aspects (tests/test_lab.py ``lab_aspect`` markers), in reading order
ASPECTS: tuple[str, ...] = (
    "healthy",
    "detect",
    "symptom",
    "fix",
    "idempotent",
    "collateral",
    "security",
    "calls",
)
PHASES: tuple[tuple[str, str], ...] = (
    ("before", "before the break"),
    ("broken", "after the break"),
    ("fixed", "after the fix"),
)
#: fill, stroke and text colour per stage state
_COLOURS = {
    "ok": ("#e6f4ea", "#1e8e3e", "#0d652d"),
    "failed": ("#fce8e6", "#d93025", "#a50e0e"),
    "not-probed": ("#fef7e0", "#e37400", "#8a4b00"),
    "not-reached": ("#f1f3f4", "#9aa0a6", "#5f6368"),
}

CSS = """
.rdplab-matrix{border-collapse:collapse;margin:.5em 0 1.5em}
.rdplab-matrix th,.rdplab-matrix td{border:1px solid #dadce0;padding:3px 8px;font-size:13px}
.rdplab-matrix th{background:#f8f9fa;text-align:left}
.rdplab-matrix td{text-align:center;min-width:5.5em}
.rdplab-matrix td a{display:block;color:inherit;text-decoration:none}
.rdplab-cell-passed{background:#ceead6;color:#0d652d}
.rdplab-cell-failed{background:#fad2cf;color:#a50e0e;font-weight:bold}
.rdplab-cell-skipped{background:#feefc3;color:#8a4b00}
.rdplab-cell-none{background:#fff;color:#bdc1c6}
.rdplab-scenario{border-top:2px solid #dadce0;margin:1.5em 0;padding-top:.5em}
.rdplab-diagrams figure{margin:.4em 0}
.rdplab-diagrams figcaption{font-size:13px;color:#3c4043}
.rdplab-evidence table{border-collapse:collapse;margin:.3em 0}
.rdplab-evidence th,.rdplab-evidence td{border:1px solid #dadce0;padding:2px 6px;font-size:12px;
vertical-align:top;text-align:left}
.rdplab-evidence th{background:#f8f9fa}
.rdplab-aspect{margin:.6em 0 .6em 1em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _sid(run: ScenarioRun) -> str:
    return run.scenario.id


# -- the stage diagram --------------------------------------------------------------------
def stage_states(conn: ConnectionResult | None) -> list[tuple[str, str, str]]:
    """(stage, state, detail) per stage: ok, failed, not-probed or not-reached."""
    seen = {s.name: s for s in conn.stages} if conn else {}
    out = []
    for name, _ in STAGES:
        if name in seen:
            stage = seen[name]
            out.append((name, "ok" if stage.ok else "failed", stage.detail))
        elif conn is not None and name in conn.not_probed:
            out.append((name, "not-probed", f"not probed: {conn.not_probed[name]}"))
        elif conn is not None and conn.ok:
            out.append((name, "not-reached", "not used by this connection"))
        else:
            out.append((name, "not-reached", "not reached"))
    return out


def codes(conn: ConnectionResult) -> str:
    """The failure's codes as the client would report them."""
    parts = []
    if conn.error_code:
        parts.append(f"{conn.error_code} / {conn.extended_code}")
    if conn.negotiation_failure:
        parts.append(f"RDP_NEG_FAILURE 0x{conn.negotiation_failure:x}")
    if not parts and conn.failed_stage == "credssp":
        parts.append("CredSSP error dialog")
    return ", ".join(parts)


def stage_svg(
    conn: ConnectionResult | None,
    scenario: str,
    phase: str,
    caption: str,
    router: tuple[str, str] | None = None,
) -> str:
    """One connection drawn as six stage boxes; the failing one red with its codes. With
    ``router`` (state, detail), the router hop a client outside or on a VPN goes through is
    drawn between name resolution and TCP (``data-hop="router"``)."""
    box_w, box_h, gap, top = 112, 40, 14, 8
    boxes = len(STAGES) + (1 if router else 0)
    width = boxes * box_w + (boxes - 1) * gap + 8
    height = top + box_h + 30
    label = f"{scenario}: {caption}: " + (
        "no connection attempt"
        if conn is None
        else "connected"
        if conn.ok
        else f"failed at {conn.failed_stage} ({codes(conn)})"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rdplab-stages" role="img"'
        f' data-scenario="{_e(scenario)}" data-phase="{_e(phase)}" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f"<title>{_e(label)}</title>",
    ]
    shift = 0
    for i, (name, state, detail) in enumerate(stage_states(conn)):
        if router and name == "tcp":
            hx = 4 + i * (box_w + gap)
            fill, stroke, ink = _COLOURS[router[0]]
            parts.append(
                f'<g data-hop="router" data-state="{router[0]}"><title>{_e(router[1])}</title>'
                f'<rect x="{hx}" y="{top}" width="{box_w}" height="{box_h}" rx="20"'
                f' fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
                f'<text x="{hx + box_w / 2}" y="{top + 25}" text-anchor="middle"'
                f' font-size="13" fill="{ink}">router</text></g>'
                f'<path d="M{hx - gap + 2} {top + box_h / 2} h{gap - 6} l-4 -4 m4 4 l-4 4"'
                ' stroke="#9aa0a6" fill="none" stroke-width="1.5"/>'
            )
            shift = 1
        x = 4 + (i + shift) * (box_w + gap)
        fill, stroke, ink = _COLOURS[state]
        dash = ' stroke-dasharray="4 3"' if state in ("not-reached", "not-probed") else ""
        parts.append(
            f'<g data-stage="{name}" data-state="{state}"><title>{_e(detail)}</title>'
            f'<rect x="{x}" y="{top}" width="{box_w}" height="{box_h}" rx="6" fill="{fill}"'
            f' stroke="{stroke}" stroke-width="2"{dash}/>'
            f'<text x="{x + box_w / 2}" y="{top + 25}" text-anchor="middle" font-size="13"'
            f' fill="{ink}">{_e(dict(STAGES)[name])}</text></g>'
        )
        if i:
            ax = x - gap
            parts.append(
                f'<path d="M{ax + 2} {top + box_h / 2} h{gap - 6} l-4 -4 m4 4 l-4 4"'
                ' stroke="#9aa0a6" fill="none" stroke-width="1.5"/>'
            )
        if state == "failed" and conn is not None:
            parts.append(
                f'<text x="{x + box_w / 2}" y="{top + box_h + 18}" text-anchor="middle"'
                f' font-size="12" font-weight="bold" fill="#a50e0e">{_e(codes(conn))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def diagrams(run: ScenarioRun) -> str:
    conns = {
        "before": run.connection_before,
        "broken": run.connection,
        "fixed": run.connection_after,
    }
    net = run.scenario.network
    routed = net.router is not None and net.client_site != "lan"
    figures = []
    for phase, caption in PHASES:
        conn = conns[phase]
        hop = router_hop_state(conn) if routed else None
        verdict = (
            "not run"
            if conn is None
            else "connected"
            if conn.ok
            else f"failed at {conn.failed_stage}: {conn.evidence}"
        )
        figures.append(
            f'<figure data-phase="{phase}">'
            f"<figcaption><b>{_e(caption)}</b>: {_e(verdict)}</figcaption>"
            + stage_svg(conn, _sid(run), phase, caption, hop)
            + "</figure>"
        )
        if conn is not None and conn.ladder:
            figures.append(
                f'<figure data-phase="{phase}-ladder"><figcaption><b>{_e(caption)}</b>:'
                f" the packets that crossed the router ({_e(run.provider)}: real packets)"
                "</figcaption>" + ladder_svg(conn.ladder, _sid(run), phase) + "</figure>"
            )
    return f'<div class="rdplab-diagrams" data-scenario="{_e(_sid(run))}">{"".join(figures)}</div>'


# -- the settings table ---------------------------------------------------------------------
def _keyed(data: Any) -> Any:
    """Lists of named things (firewall rules) keyed by name, so every provider's shape and
    the twin's snapshot line up."""
    if isinstance(data, dict):
        return {k: _keyed(v) for k, v in data.items()}
    if isinstance(data, list) and data and all(isinstance(v, dict) and "name" in v for v in data):
        return {str(v["name"]): _keyed(v) for v in data}
    if isinstance(data, list):
        return [_keyed(v) for v in data]
    return data


def _settings(snapshot: Mapping[str, Any] | None) -> dict[str, Any]:
    """Setting label -> value: registry values as KEY\\NAME (type dropped), the rest as paths."""
    flat = flatten(_keyed(dict(snapshot or {})))
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if path.startswith("registry/"):
            if path.endswith("/type"):
                continue
            path = path.removeprefix("registry/").removesuffix("/data").replace("/", "\\")
        out[path] = value
    return out


def _touches(op: Op, label: str) -> bool:
    """Whether an op names this setting: a registry op its key (and value name, when it
    names one); any other op one of its string arguments (a rule, store or service name)."""
    low = label.lower()
    key, name = op.args.get("key"), op.args.get("name")
    if isinstance(key, str):
        if key.lower() == low or key.lower().startswith(low + "\\"):  # the key or a parent
            return True
        if not low.startswith(key.lower()):
            return False
        return not isinstance(name, str) or low == f"{key}\\{name}".lower()
    return any(w.lower() in low for w in _words(op.args))


def _words(value: Any) -> list[str]:
    """The names in an op's arguments (nested too): long enough not to match by chance."""
    if isinstance(value, str):
        return [value] if len(value) >= 6 and not value.isdigit() else []
    if isinstance(value, Mapping):
        return [w for v in value.values() for w in _words(v)]
    if isinstance(value, list | tuple):
        return [w for v in value for w in _words(v)]
    return []


def _source(run: ScenarioRun, role: Role, label: str, also: str = "") -> str:
    """The break or fix ops that name the setting (or ``also``: a firewall rule's group),
    else the fault or fix that declares it may change (its leaves patterns), else a side
    effect."""
    ctx = run.ctx_values
    named = f"{label} {also}" if also else label
    found = [
        f"break: {pf.fault.id} {op.name}"
        for pf in run.scenario.faults
        for op in (render_op(o, ctx) for o in pf.placement.breaks.get(role, ()))
        if _touches(op, named)
    ] + [
        f"fix: {af.fault}/{af.fix.id} {op.name} ({af.fix.risk})"
        for af in run.fixes
        for op in af.ops.get(role, ())
        if _touches(op, named)
    ]
    if not found:
        path = f"{role}:{_raw_path(label)}"
        found = [f"declared by {p}" for p in run.allowed if allowed(path, [p])][:1]
    return "; ".join(dict.fromkeys(found)) or "a side effect no op names"


def settings_rows(run: ScenarioRun) -> list[tuple[str, str, Any, Any, Any, str]]:
    """(machine, setting, before the break, after the break, after the fix, source) for
    every setting the break or the fix changed (from the gathered facts)."""
    rows: list[tuple[str, str, Any, Any, Any, str]] = []
    for role in ROLES:
        broken_f, fixed_f = run.facts.get(role), run.facts_after.get(role)
        if broken_f is None:
            continue
        broken = _settings(snapshot_from_facts(broken_f.raw))
        fixed = _settings(snapshot_from_facts(fixed_f.raw)) if fixed_f is not None else {}
        before = _settings(run.base.get(role))
        groups = {
            str(r.get("name")): str(r.get("group") or "")
            for r in (broken_f.raw.get("firewall") or {}).get("rules") or ()
            if isinstance(r, dict)
        }
        for label in sorted(set(broken) | set(fixed)):
            b, x, f = before.get(label), broken.get(label), fixed.get(label)
            if fixed_f is None:  # no fix ran (skipped, or the run stopped): the break alone
                if label not in before or b == x:
                    continue
            elif x == f and (label not in before or b == x):
                continue
            rule = label.split("/")[2] if label.startswith("firewall/rules/") else ""
            group = f"group {groups[rule]}" if groups.get(rule) else ""
            rows.append((role, label, b, x, f, _source(run, role, label, group)))
    return _collapse(rows)


def _collapse(
    rows: list[tuple[str, str, Any, Any, Any, str]],
) -> list[tuple[str, str, Any, Any, Any, str]]:
    """A firewall rule that exists in one state only becomes one row (its fields as the
    value), instead of a row per field."""
    out: list[tuple[str, str, Any, Any, Any, str]] = []
    for row in rows:
        role, label, b, x, f, src = row
        parts = label.split("/")
        if label.startswith("firewall/rules/") and len(parts) == 4:
            rule = "/".join(parts[:3])
            last = out[-1] if out else None
            whole = [v is None for v in (b, x, f)].count(True) == 2
            if whole and last and last[0] == role and last[1] == rule:
                mb, mx, mf = (
                    {**m, parts[3]: v} if isinstance(m, dict) else m
                    for m, v in zip(last[2:5], (b, x, f), strict=True)
                )
                out[-1] = (role, rule, mb, mx, mf, last[5])
                continue
            if whole:
                vb, vx, vf = (None if v is None else {parts[3]: v} for v in (b, x, f))
                out.append((role, rule, vb, vx, vf, src))
                continue
        out.append(row)
    return out


def _raw_path(label: str) -> str:
    # registry labels go back to the snapshot's path form for the leaves patterns
    if label.upper().startswith(("HKLM\\", "HKCU\\", "HKEY_")):
        key, _, name = label.rpartition("\\")
        return f"registry/{key}/{name}/data"
    return label


def settings_table(run: ScenarioRun) -> str:
    rows = settings_rows(run)
    if not rows:
        return "<p>No gathered setting differs between the break and the fix.</p>"

    def cell(v: Any) -> str:
        return "<i>absent</i>" if v is None else _e(v)

    body = "".join(
        f"<tr><td>{_e(role)}</td><td><code>{_e(label)}</code></td><td>{cell(b)}</td>"
        f"<td>{cell(x)}</td><td>{cell(f)}</td><td>{_e(src)}</td></tr>"
        for role, label, b, x, f, src in rows
    )
    return (
        "<table><tr><th>machine</th><th>setting</th><th>before the break</th>"
        "<th>after the break</th><th>after the fix</th><th>source</th></tr>"
        f"{body}</table>"
    )


# -- the page parts -------------------------------------------------------------------------
def _aspects(present: Iterable[str]) -> list[str]:
    present = set(present)
    return [a for a in ASPECTS if a in present] + sorted(present - set(ASPECTS))


def matrix(scenarios: Iterable[str], outcomes: Mapping[tuple[str, str], str]) -> str:
    """The scenario-by-aspect matrix: each cell coloured by the test's outcome and linked
    to that aspect's evidence in the scenario's section."""
    scenarios = list(scenarios)
    aspects = _aspects(a for _, a in outcomes)
    head = "".join(f"<th>{_e(a)}</th>" for a in aspects)
    rows = []
    for sid in scenarios:
        cells = []
        for a in aspects:
            outcome = outcomes.get((sid, a))
            if outcome is None:
                cells.append('<td class="rdplab-cell-none" title="not tested">&ndash;</td>')
                continue
            mark = {"passed": "&#10004;", "failed": "&#10008;"}.get(outcome, "&#8212;")
            cells.append(
                f'<td class="rdplab-cell-{_e(outcome)}" data-aspect="{_e(a)}"'
                f' data-outcome="{_e(outcome)}"><a href="#ev-{_e(sid)}-{_e(a)}">'
                f"{mark} {_e(outcome)}</a></td>"
            )
        rows.append(
            f'<tr data-scenario="{_e(sid)}"><th><a href="#scenario-{_e(sid)}">{_e(sid)}</a>'
            f"</th>{''.join(cells)}</tr>"
        )
    return (
        f"<style>{CSS}</style><h2>Scenarios by aspect</h2>"
        "<p>Each cell is one test of the lab suite; click it for that aspect's evidence.</p>"
        '<table class="rdplab-matrix" id="rdplab-matrix">'
        f"<thead><tr><th>scenario</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def section_head(run: ScenarioRun) -> str:
    """A scenario's section up to its evidence: what was broken, the three diagrams, the
    settings that changed (independent of the test outcomes)."""
    sc = run.scenario
    faults = ", ".join(f"{pf.fault.id} on {pf.placement.on}" for pf in sc.faults) or "none"
    return (
        f"<h3>{_e(sc.id)}</h3>"
        + (f"<p>{_e(sc.description)}</p>" if sc.description else "")
        + f"<p>faults: {_e(faults)}; provider {_e(run.provider)} ({_e(run.runs_on)})</p>"
        + (
            f"<p><b>scenario error at step {_e(run.failed_step)}:</b> {_e(run.error)}</p>"
            if run.error
            else ""
        )
        + hidden_list(run)
        + diagrams(run)
        + '<div class="rdplab-evidence"><h4>settings changed</h4>'
        + settings_table(run)
        + "</div>"
    )


def hidden_list(run: ScenarioRun) -> str:
    """What one placed fault hides of another, and why (``Scenario.masking``): declared in
    the catalog (hidden from the detectors) or an earlier stage failing first (hidden from
    the connection). Each is met once what hides it is fixed."""
    masked = run.scenario.masking()
    if not masked:
        return ""
    items = "".join(
        f'<li data-hidden="{_e(m.fault)}" data-kind="{_e(m.kind)}"><b>{_e(m.fault)}</b>'
        f" is hidden from the {_e(m.kind)} by {_e(', '.join(m.by))}: {_e(m.reason)};"
        " it shows once that is fixed</li>"
        for m in masked
    )
    return f'<div class="rdplab-hidden"><h4>hidden</h4><ul>{items}</ul></div>'


def section(
    sid: str,
    head: str,
    evidence: Mapping[str, str],
    outcomes: Mapping[tuple[str, str], str],
) -> str:
    """One scenario's section: its head and each aspect's evidence, anchored for the
    matrix (``ev-<scenario>-<aspect>``)."""
    blocks = "".join(
        f'<div class="rdplab-aspect" id="ev-{_e(sid)}-{_e(a)}" data-aspect="{_e(a)}">'
        f"<h4>{_e(a)}: {_e(outcomes.get((sid, a), 'not run'))}</h4>{evidence[a]}</div>"
        for a in _aspects(evidence)
    )
    return (
        f'<section class="rdplab-scenario" id="scenario-{_e(sid)}" data-scenario="{_e(sid)}">'
        f'{head}<div class="rdplab-evidence">{blocks}</div></section>'
    )
