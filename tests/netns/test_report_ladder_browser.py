"""The lab report on the netns provider, opened in Debian's headless Chromium: each
scenario's packets through the router drawn as a ladder beside its stage diagrams, the
router hop drawn in the stage diagrams of a client outside or on a VPN, and the black hole
of vpn-mtu-blackhole visible (the too-big segments end at the router, the ICMP never
comes). The same browser flags and check-by-dump-DOM as tests/test_report_browser.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from test_report_browser import browse, chromium

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "labs" / "network.yaml"
PICK = "vpn-mtu-blackhole or port-forward-missing"

CHECK = """
<script>
(function () {
  const out = {ladders: [], hops: []};
  for (const svg of document.querySelectorAll('svg.rdplab-ladder[data-scenario]')) {
    svg.scrollIntoView({block: 'center'});
    const r = svg.getBoundingClientRect();
    out.ladders.push({scenario: svg.dataset.scenario, phase: svg.dataset.phase,
      w: r.width, h: r.height,
      lanes: [...svg.querySelectorAll('g[data-lane]')].map(g => g.dataset.lane),
      packets: [...svg.querySelectorAll('g[data-packet]')].map(g => ({
        label: g.dataset.packet, dropped: g.dataset.dropped || '', never: g.dataset.never || '',
        w: g.getBBox().width}))});
  }
  for (const g of document.querySelectorAll('svg.rdplab-stages g[data-hop="router"]'))
    out.hops.push({scenario: g.closest('svg').dataset.scenario,
                   phase: g.closest('svg').dataset.phase, state: g.dataset.state});
  const pre = document.createElement('pre');
  pre.id = 'rdplab-ladder-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory, netns_ready: None) -> dict[str, Any]:
    chromium()
    tmp = tmp_path_factory.mktemp("ladder")
    out = tmp / "lab.html"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_lab.py"),
         f"--lab-file={LAB_FILE}", "--lab-provider=netns", "-k", PICK, "-p",
         "no:cacheprovider", "-q", f"--html={out}", "--self-contained-html"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    page = tmp / "check.html"
    page.write_text(out.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"))
    shown = browse(
        ["--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        tmp,
    )
    m = re.search(r'<pre id="rdplab-ladder-check">(.*?)</pre>', shown.stdout, re.S)
    assert m, shown.stderr[-2000:]
    data: dict[str, Any] = json.loads(
        m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    return data


@pytest.fixture(scope="module")
def netns_ready() -> None:
    from rdplab.netlab import NetlabUnavailable, require

    try:
        require()
    except NetlabUnavailable as exc:
        pytest.skip(str(exc))


def test_every_phase_has_a_rendered_ladder(seen: dict[str, Any]) -> None:
    drawn = {(d["scenario"], d["phase"]): d for d in seen["ladders"]}
    for sid in ("vpn-mtu-blackhole", "port-forward-missing"):
        for phase in ("before", "broken", "fixed"):
            d = drawn[(sid, phase)]
            assert d["w"] > 500 and d["h"] > 60, d
            assert d["lanes"] == ["client", "router", "host"]
            assert all(p["w"] > 0 for p in d["packets"]), d


def test_the_black_hole_is_drawn(seen: dict[str, Any]) -> None:
    drawn = {(d["scenario"], d["phase"]): d for d in seen["ladders"]}
    broken = [p["label"] for p in drawn[("vpn-mtu-blackhole", "broken")]["packets"]]
    for want in ("SYN", "SYN-ACK", "X.224 Connection Request", "X.224 Connection Confirm"):
        assert want in broken, broken
    assert any("ClientHello" in x for x in broken), broken
    dropped = [
        p for p in drawn[("vpn-mtu-blackhole", "broken")]["packets"] if p["dropped"] == "true"
    ]
    assert dropped and all("too big" in p["label"] for p in dropped), dropped
    assert any(p["never"] == "true" for p in drawn[("vpn-mtu-blackhole", "broken")]["packets"])
    fixed = [p["label"] for p in drawn[("vpn-mtu-blackhole", "fixed")]["packets"]]
    assert any("server flight" in x for x in fixed), fixed


def test_the_router_hop_is_red_where_the_forward_is_missing(seen: dict[str, Any]) -> None:
    hops = {(h["scenario"], h["phase"]): h["state"] for h in seen["hops"]}
    assert hops[("port-forward-missing", "broken")] == "failed"
    assert hops[("port-forward-missing", "fixed")] == "ok"
    assert hops[("vpn-mtu-blackhole", "broken")] == "ok"  # the hop passes; TLS stalls
    missing = {(d["scenario"], d["phase"]): d for d in seen["ladders"]}
    syns = missing[("port-forward-missing", "broken")]["packets"]
    assert syns and all(p["dropped"] == "true" for p in syns), syns  # no forward: all end there
