"""The no-collateral diff holds on every provider's snapshot shape.

The sim backend diffs the twin's whole persistent state (``Twin.snapshot``); real
providers diff the facts the agent gathers (``Backend.snapshot``), whose registry values
sit under ``values/``. Each fault's ``leaves`` patterns must fit both, or
``test_no_collateral`` would fail on real machines for a fix that did nothing wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rdplab.backends.base import Backend
from rdplab.backends.sim import SimBackend
from rdplab.lab import load_lab
from rdplab.providers import get_provider
from rdplab.scenario import run_scenario

LAB = load_lab(Path(__file__).resolve().parents[2] / "labs" / "rdp-0x904.yaml")


@pytest.mark.parametrize("scenario", LAB.scenarios, ids=[s.id for s in LAB.scenarios])
def test_no_collateral_on_the_facts_shape(
    scenario: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimBackend, "snapshot", Backend.snapshot)
    run = run_scenario(get_provider("sim"), scenario)  # type: ignore[arg-type]
    assert run.error is None, run.error
    assert run.unexpected_diff == {}
