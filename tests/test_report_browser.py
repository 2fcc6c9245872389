"""reports/lab.html in a real browser: the lab suite writes the report for the whole lab
file (as ``tox -e lab`` does), Debian's headless Chromium lays it out, and every
scenario's three stage diagrams are rendered (six stage boxes with size), visible (no
hidden ancestor, on top at their centre once scrolled to) and coloured by outcome; the
failing stage after the break is red. A screenshot of the page goes to reports/.

The checks run inside the page: the test adds a small script to a copy of the report and
reads its findings back from Chromium's ``--dump-dom`` (no DevTools client needed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rdplab.lab import load_lab

REPO = Path(__file__).resolve().parents[1]
LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
SCREENSHOT = REPO / "reports" / "lab-report.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
RED = "rgb(217, 48, 37)"  # the failing stage's outline (report_page._COLOURS)
GREEN = "rgb(30, 142, 62)"

CHECK = """
<script>
(function () {
  const out = {diagrams: [], matrix: [], sections: []};
  for (const svg of document.querySelectorAll('svg.rdplab-stages[data-scenario]')) {
    svg.scrollIntoView({block: 'center'});
    const r = svg.getBoundingClientRect();
    let shown = true;
    for (let e = svg; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0)
        shown = false;
    }
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    const stages = [...svg.querySelectorAll('g[data-stage]')].map(g => {
      const b = g.getBBox();
      const rect = g.querySelector('rect');
      return {stage: g.dataset.stage, state: g.dataset.state, w: b.width, h: b.height,
              stroke: getComputedStyle(rect).stroke};
    });
    out.diagrams.push({scenario: svg.dataset.scenario, phase: svg.dataset.phase,
      w: r.width, h: r.height, shown: shown, onTop: !!hit && svg.contains(hit),
      stages: stages, codes: [...svg.querySelectorAll(':scope > text')].map(t => t.textContent)});
  }
  for (const tr of document.querySelectorAll('#rdplab-matrix tr[data-scenario]')) {
    out.matrix.push({scenario: tr.dataset.scenario,
      cells: [...tr.querySelectorAll('td[data-outcome]')].map(td => ({
        aspect: td.dataset.aspect, outcome: td.dataset.outcome,
        href: td.querySelector('a').getAttribute('href'),
        background: getComputedStyle(td).backgroundColor}))});
  }
  for (const s of document.querySelectorAll('section.rdplab-scenario[data-scenario]'))
    out.sections.push({scenario: s.dataset.scenario,
                       anchors: [...s.querySelectorAll('[id]')].map(e => e.id)});
  const pre = document.createElement('pre');
  pre.id = 'rdplab-browser-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return path


def browse(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reports/lab.html's twin: the lab suite over the whole lab file, with pytest-html."""
    chromium()
    out = tmp_path_factory.mktemp("report") / "lab.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "tests" / "test_lab.py"),
            f"--lab-file={LAB_FILE}",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--html={out}",
            "--self-contained-html",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return out


@pytest.fixture(scope="module")
def seen(report: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What Chromium laid out, as the in-page script measured it."""
    tmp = tmp_path_factory.mktemp("browser")
    page = tmp / "lab-check.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"))
    done = browse(
        ["--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        tmp,
    )
    m = re.search(r'<pre id="rdplab-browser-check">(.*?)</pre>', done.stdout, re.S)
    assert m, done.stderr[-2000:]
    data: dict[str, Any] = json.loads(
        m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    return data


def test_every_scenario_diagram_is_rendered_and_visible(seen: dict[str, Any]) -> None:
    scenarios = [s.id for s in load_lab(LAB_FILE).scenarios]
    drawn = {(d["scenario"], d["phase"]): d for d in seen["diagrams"]}
    assert set(drawn) == {(s, p) for s in scenarios for p in ("before", "broken", "fixed")}
    for key, d in drawn.items():
        assert d["w"] > 400 and d["h"] > 40, (key, d)
        assert d["shown"] and d["onTop"], (key, d)
        assert [s["stage"] for s in d["stages"]] == [
            "name-resolution",
            "tcp",
            "x224",
            "tls",
            "credssp",
            "licensing",
        ]
        assert all(s["w"] > 50 and s["h"] > 20 for s in d["stages"]), (key, d["stages"])


def test_the_break_is_red_where_it_fails_and_green_after_the_fix(seen: dict[str, Any]) -> None:
    lab = load_lab(LAB_FILE)
    drawn = {(d["scenario"], d["phase"]): d for d in seen["diagrams"]}
    for sc in lab.scenarios:
        for phase in ("before", "broken", "fixed"):
            d = drawn[(sc.id, phase)]
            states = [s["state"] for s in d["stages"]]
            failed = [s for s in d["stages"] if s["state"] == "failed"]
            if phase == "fixed" or sc.healthy:
                assert set(states) <= {"ok", "not-reached"} and "ok" in states, (sc.id, d)
                assert all(s["stroke"] == GREEN for s in d["stages"] if s["state"] == "ok")
                continue
            if phase == "broken":
                assert len(failed) == 1, (sc.id, d)
            if failed:  # red, with the client's codes under it, nothing reached after it
                assert failed[0]["stroke"] == RED and d["codes"] and d["codes"][0], (sc.id, d)
                after = states[states.index("failed") + 1 :]
                assert set(after) <= {"not-reached"}, (sc.id, d)
    # the unpatched host's baseline already refuses a Mitigated client (KB 4093492): the
    # diagram before the break says so rather than pretending all was well
    before = drawn[("credssp-oracle-mismatch", "before")]
    assert [s["stage"] for s in before["stages"] if s["state"] == "failed"] == ["credssp"]
    assert all(s["state"] == "ok" for s in drawn[("rdp-disabled", "before")]["stages"])


def test_matrix_rows_link_to_their_evidence(seen: dict[str, Any]) -> None:
    scenarios = [s.id for s in load_lab(LAB_FILE).scenarios]
    assert [r["scenario"] for r in seen["matrix"]] == scenarios
    anchors = {s["scenario"]: set(s["anchors"]) for s in seen["sections"]}
    assert list(anchors) == scenarios
    for row in seen["matrix"]:
        assert len(row["cells"]) >= 3, row
        for cell in row["cells"]:
            assert cell["href"].lstrip("#") in anchors[row["scenario"]], cell
            assert cell["outcome"] == "passed" and cell["background"] == "rgb(206, 234, 214)"


def test_screenshot(report: Path, tmp_path: Path) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    done = browse(
        ["--window-size=1400,2400", f"--screenshot={SCREENSHOT}", report.as_uri()], tmp_path
    )
    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 20_000, done.stderr[-2000:]
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
