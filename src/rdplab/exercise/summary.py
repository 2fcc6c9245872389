"""Many trainees' result files (what ``answer`` and ``check`` write) as one HTML page and
one CSV for the trainer: a row per result, the mean score per exercise, and the causes
missed most often."""

from __future__ import annotations

import csv
import html
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rdplab.errors import RdplabError

RESULT_KIND = "rdplab-exercise-result"
COLUMNS = (
    "trainee",
    "exercise",
    "mode",
    "score",
    "found",
    "missed",
    "wrong",
    "safe_fixes",
    "lowering_fixes",
    "not_a_fix",
    "submitted",
    "file",
)


def collect(directory: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Result files under ``directory`` (any depth), and the JSON files that are not."""
    if not directory.is_dir():
        raise RdplabError(f"{directory}: not a folder of result files")
    results, skipped = [], []
    for path in sorted(directory.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            skipped.append(f"{path}: not JSON ({exc})")
            continue
        if not isinstance(data, dict) or data.get("kind") != RESULT_KIND:
            skipped.append(f"{path}: not an exercise result")
            continue
        data["_file"] = str(path.relative_to(directory))
        results.append(data)
    if not results:
        raise RdplabError(
            f"{directory}: no result files (each trainee's `rdplab exercise answer` writes one)"
        )
    return results, skipped


def row(r: dict[str, Any]) -> dict[str, Any]:
    causes = r.get("causes", [])
    fixes = r.get("fixes", [])
    good = ("found", "repaired")
    return {
        "trainee": r.get("trainee", ""),
        "exercise": r.get("exercise", ""),
        "mode": r.get("mode", ""),
        "score": r.get("score", 0.0),
        "found": ";".join(f"{c['fault']}@{c['role']}" for c in causes if c["verdict"] in good),
        "missed": ";".join(f"{c['fault']}@{c['role']}" for c in causes if c["verdict"] not in good),
        "wrong": ";".join(r.get("wrong", [])),
        "safe_fixes": ";".join(f["fix"] for f in fixes if f["verdict"] == "safe"),
        "lowering_fixes": ";".join(f["fix"] for f in fixes if f["verdict"] == "lowers-security")
        + ";".join(s["fix"] for s in r.get("security_lowered", [])),
        "not_a_fix": ";".join(f["fix"] for f in fixes if f["verdict"] == "not-a-fix"),
        "submitted": r.get("submitted", ""),
        "file": r.get("_file", ""),
    }


def write(results: list[dict[str, Any]], html_path: Path, csv_path: Path) -> None:
    rows = sorted((row(r) for r in results), key=lambda x: (x["exercise"], x["trainee"]))
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        html_path.write_text(page(rows), encoding="utf-8")
    except OSError as exc:
        raise RdplabError(f"cannot write the report ({exc.strerror}: {exc.filename})") from None


def _colour(score: float) -> str:
    return "#c8f0c8" if score >= 1.0 else "#fbeec1" if score >= 0.5 else "#f6c9c9"


def page(rows: list[dict[str, Any]]) -> str:
    e = html.escape
    by_ex: dict[str, list[float]] = defaultdict(list)
    missed: Counter[str] = Counter()
    for r in rows:
        by_ex[r["exercise"]].append(float(r["score"]))
        missed.update(m for m in r["missed"].split(";") if m)
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS if c != "file")
    body = "\n".join(
        f'<tr data-exercise="{e(r["exercise"])}">'
        + "".join(
            f'<td style="background:{_colour(float(r["score"]))}">{float(r["score"]):.2f}</td>'
            if c == "score"
            else f"<td>{e(str(r[c])).replace(';', '<br>')}</td>"
            for c in COLUMNS
            if c != "file"
        )
        + "</tr>"
        for r in rows
    )
    ex_rows = "\n".join(
        f"<tr><td>{e(ex)}</td><td>{len(s)}</td><td>{sum(s) / len(s):.2f}</td>"
        f"<td>{sum(x >= 1.0 for x in s)}</td></tr>"
        for ex, s in sorted(by_ex.items())
    )
    miss_rows = (
        "\n".join(f"<tr><td>{e(c)}</td><td>{n}</td></tr>" for c, n in missed.most_common())
        or '<tr><td colspan="2">nothing missed</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rdplab exercise results</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #eee; }}
</style></head><body>
<h1>rdplab exercise results</h1>
<p>{len(rows)} result(s). Scores run from 0 to 1: 1 is every cause named with a safe fix
(answer), or every cause repaired, the connection working, nothing else changed and
security kept (check).</p>
<h2>By exercise</h2>
<table><tr><th>exercise</th><th>results</th><th>mean score</th><th>perfect</th></tr>
{ex_rows}
</table>
<h2>Causes missed most often</h2>
<table><tr><th>cause</th><th>missed by</th></tr>
{miss_rows}
</table>
<h2>Every result</h2>
<table><tr>{head}</tr>
{body}
</table>
</body></html>
"""
