"""Which scenario a seed gives. The pool is every fault placement the lab file uses (so a
trainer's lab file is the curriculum); a seed draws one to K faults from it, composes them
into a scenario on the file's machines and network, and keeps it only if it is solvable:
on the sim it breaks cleanly, the detectors find exactly the placed causes, and the client
sees a failure. The same seed, fault count and lab file give the same exercise."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdplab.catalog.base import Role
from rdplab.errors import LabFileError, RdplabError
from rdplab.lab import Lab, Scenario
from rdplab.scenario import ScenarioRun

#: redraws before giving up on a seed (a draw fails on conflicting needs: baselines, transport)
ATTEMPTS = 200


@dataclass(frozen=True)
class Cause:
    """One placed fault: what the trainee must name (``fault@role``) and how it was put."""

    fault: str
    role: Role
    variant: str = "default"

    @property
    def label(self) -> str:
        return f"{self.fault}@{self.role}"

    def ref(self) -> dict[str, str]:
        return {"fault": self.fault, "on": self.role, "variant": self.variant}

    def to_json(self) -> dict[str, str]:
        return {"fault": self.fault, "role": self.role}


def lab_digest(path: Path) -> str:
    """The lab file's identity: a digest of its bytes (the same file anywhere)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise LabFileError(str(path), f"cannot read the lab file ({exc.strerror})") from None


def exercise_id(seed: int, faults: int, digest: str) -> str:
    return "ex-" + hashlib.sha256(f"{seed}:{faults}:{digest}".encode()).hexdigest()[:10]


def pool(lab: Lab) -> dict[str, list[Cause]]:
    """Fault id -> the placements of it the lab file uses, in file order."""
    out: dict[str, list[Cause]] = {}
    for sc in lab.scenarios:
        for pf in sc.faults:
            cause = Cause(pf.fault.id, pf.placement.on, pf.placement.variant)
            if cause not in out.setdefault(cause.fault, []):
                out[cause.fault].append(cause)
    return out


def compose(lab: Lab, ex_id: str, causes: list[Cause]) -> Scenario:
    return lab.compose(ex_id, [c.ref() for c in causes])


def draw(
    lab: Lab, seed: int, faults: int, digest: str
) -> tuple[Scenario, list[Cause], ScenarioRun]:
    """The exercise's scenario and causes for this seed (deterministic), with the sim run
    that showed it solvable (broken, diagnosed, the client's attempt made)."""
    if faults < 1:
        raise RdplabError(f"--faults must be at least 1 (got {faults})")
    by_fault = pool(lab)
    if not by_fault:
        raise LabFileError(str(lab.path), "no scenario places a fault: nothing to draw from")
    names = sorted(by_fault)
    ex_id = exercise_id(seed, faults, digest)
    rng = random.Random(f"rdplab-exercise:{seed}:{faults}:{digest}")
    for _ in range(ATTEMPTS):
        n = rng.randint(1, min(faults, len(names)))
        causes = [rng.choice(by_fault[name]) for name in sorted(rng.sample(names, n))]
        try:
            scenario = compose(lab, ex_id, causes)
        except LabFileError:
            continue  # conflicting needs (a baseline or transport): draw again
        run = solvable(scenario)
        if run is not None:
            return scenario, causes, run
    raise RdplabError(f"{lab.path}: no solvable exercise with 1 to {faults} faults for seed {seed}")


def solvable(scenario: Scenario) -> ScenarioRun | None:
    """The sim run (``BREAK`` + ``DIAGNOSE``) if, broken on fresh twins, the detectors find
    exactly the placed causes and the client sees a failure (so the trainee can find them
    and the grading is fair); else None. A draw where the catalog declares one cause hidden
    from the detectors by another is not fair to grade either: None. A break that stops is
    a bug in the catalog or the composition rule (``rdplab.plan``), never a redraw: it is
    raised."""
    from rdplab.providers import get_provider
    from rdplab.scenario import BREAK, DIAGNOSE, run_scenario

    if scenario.hidden():
        return None
    run = run_scenario(get_provider("sim"), scenario, BREAK + DIAGNOSE)
    if run.error is not None:
        labels = ", ".join(pf.label for pf in scenario.faults)
        raise RdplabError(
            f"exercise {scenario.id} ({labels}) stopped at {run.failed_step}: {run.error}"
        )
    ok = (
        {(f.fault, f.role) for f in run.findings} == scenario.expected()
        and run.connection is not None
        and not run.connection.ok
    )
    return run if ok else None


def causes_from_json(data: Any) -> list[Cause]:
    return [Cause(c["fault"], c["role"], c.get("variant", "default")) for c in data]
