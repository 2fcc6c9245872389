"""Secret never shows its value except through reveal()."""

from __future__ import annotations

import pickle

import pytest

from rdplab.secret import Secret


def test_secret_hides_its_value_everywhere_but_reveal() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "hunter2" not in f"{s} {s!r} {[s]} {dict(password=s)}"
    assert s.reveal() == "hunter2"
    assert s


def test_empty_secret_is_falsy_and_says_none() -> None:
    assert not Secret(None)
    assert not Secret("")
    assert repr(Secret(None)) == "None"


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret("hunter2"))
