"""What crossed the router, drawn as a ladder (a sequence diagram), and the router hop of a
scenario's path. Inline SVG like the stage diagrams (report_page.py), for the HTML report.

The ladder comes from a netns run (``ConnectionResult.ladder``: the router's capture,
``rdplab.netlab.capture``): one lane each for the client, the router and the host, one
arrow per packet, in time order. A packet the router did not pass on ends at the router
lane in red; where a packet was too big for the link and no ICMP fragmentation-needed
went back to the host, a dashed grey arrow marks the ICMP that never came.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

LANES = ("client", "router", "host")
_X = {"client": 70, "router": 300, "host": 530}
ROW = 22
TOP = 46
MAX_ROWS = 60  # a long capture is cut (a stalled handshake retransmits for a while)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _lane(address_role: str) -> str:
    """The lane of an endpoint role as the capture names it (outside/lan count as the
    client's and the host's sides)."""
    if address_role in _X:
        return address_role
    return "client" if address_role == "outside" else "host"


def ladder_svg(events: Sequence[Mapping[str, Any]], scenario: str, phase: str) -> str:
    """The ladder of one connection attempt."""
    shown = list(events[:MAX_ROWS])
    cut = len(events) - len(shown)
    too_big = any("too big" in str(e.get("label", "")) + str(e.get("note", "")) for e in shown)
    icmp = any("ICMP" in str(e.get("label", "")) for e in shown)
    rows = len(shown) + (1 if too_big and not icmp else 0) + (1 if cut else 0)
    width, height = 600, TOP + rows * ROW + 16
    title = f"{scenario}: packets through the router ({len(events)})"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rdplab-ladder" role="img"'
        f' data-scenario="{_e(scenario)}" data-phase="{_e(phase)}" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f"<title>{_e(title)}</title>",
    ]
    for lane in LANES:
        x = _X[lane]
        parts.append(
            f'<g data-lane="{lane}"><text x="{x}" y="16" text-anchor="middle" font-size="13"'
            f' font-weight="bold">{lane}</text>'
            f'<line x1="{x}" y1="24" x2="{x}" y2="{height - 8}" stroke="#9aa0a6"'
            ' stroke-width="1.5"/></g>'
        )
    # packets to the router's own address that nothing ever answered: dropped there (a
    # port with no forward; the router's input chain drops them silently)
    replies = any(str(e.get("direction", "")).endswith("->client") for e in events)
    y = TOP
    for ev in shown:
        src, dst = (_lane(p) for p in str(ev.get("direction", "client->host")).split("->", 1))
        label = str(ev.get("label", ""))
        note = str(ev.get("note", ""))
        dropped = (
            "not forwarded" in note
            or "dropped" in label
            or "too big" in note
            or (note == "to the router" and not replies)
        )
        end = "router" if dropped and src != "router" else dst
        colour = "#d93025" if dropped else "#1a73e8" if src == "client" else "#188038"
        x1, x2 = _X[src], _X[end]
        if x1 == x2:
            x2 = x1 + 40
        head = -6 if x2 > x1 else 6
        again = " (again)" if ev.get("retransmission") else ""
        tip = f"{float(ev.get('t', 0)):.3f}s {ev.get('src')} -> {ev.get('dst')}: {label} {note}"
        parts.append(
            f'<g data-packet="{_e(label)}" data-dropped="{str(dropped).lower()}">'
            f"<title>{_e(tip)}</title>"
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="1.6"/>'
            f'<path d="M{x2} {y} l{head} -4 m{-head} 4 l{head} 4" stroke="{colour}"'
            ' fill="none" stroke-width="1.6"/>'
            f'<text x="{(x1 + x2) / 2}" y="{y - 4}" text-anchor="middle" font-size="11"'
            f' fill="{colour}">{_e(label + again)}</text></g>'
        )
        y += ROW
    if too_big and not icmp:
        parts.append(
            '<g data-packet="ICMP fragmentation needed" data-never="true">'
            f'<line x1="{_X["router"]}" y1="{y}" x2="{_X["host"]}" y2="{y}" stroke="#9aa0a6"'
            ' stroke-width="1.5" stroke-dasharray="5 4"/>'
            f'<text x="{(_X["router"] + _X["host"]) / 2}" y="{y - 4}" text-anchor="middle"'
            ' font-size="11" fill="#5f6368">ICMP fragmentation needed: never came</text></g>'
        )
        y += ROW
    if cut:
        parts.append(
            f'<text x="{_X["router"]}" y="{y}" text-anchor="middle" font-size="11"'
            f' fill="#5f6368">... {cut} more packets</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def router_hop_state(conn: Any) -> tuple[str, str]:
    """The router hop of a connection from outside or over a VPN: (state, detail). It
    failed when TCP failed there: the model says the router dropped or misdirected the
    SYN, or the captured packets show that nothing came back from the host's side."""
    if conn is None:
        return "not-reached", "no connection attempt"
    tcp = next((s for s in conn.stages if s.name == "tcp"), None)
    if tcp is None:
        return "not-reached", "not reached"
    if tcp.ok:
        return "ok", "; ".join(n for n in conn.notes if "router" in n) or "passed"
    if "router" in tcp.detail:
        return "failed", tcp.detail
    ladder = list(getattr(conn, "ladder", []) or [])
    answered = any(str(e.get("direction", "")).startswith("host") for e in ladder)
    if ladder and not answered:
        dropped = any(
            "not forwarded" in str(e.get("note", "")) or e.get("note") == "to the router"
            for e in ladder
        )
        why = "the router passed nothing on" if dropped else "nothing answered behind it"
        return "failed", f"{tcp.detail}: {why} (captured on the router)"
    return "ok", "passed on (the failure is past the router)"
