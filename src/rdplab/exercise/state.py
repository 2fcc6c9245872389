"""The exercise's state file (default ``.rdplab/exercise.json``).

What the trainee may read is in the clear: the id, the seed, the lab file, the provider and
the symptom. The answer (the causes, and on a real lab the healthy baseline the repair is
diffed against) is sealed: zlib-compressed JSON encrypted with Fernet (AES-128-CBC with
HMAC-SHA256, from ``cryptography``) under a key derived from the seed and the exercise id.
That keeps it from being read by eye or found with grep; it is not a secret from someone
who reads this code, since the seed is in the file (and anyone with the seed can run
``new --reveal``). A trainer who wants more hands out state files without the seed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from rdplab.errors import RdplabError

DEFAULT_STATE = Path(".rdplab/exercise.json")
FORMAT = 1


class StateError(RdplabError):
    """The state file is missing, unreadable or not an exercise."""


def _key(seed: int, ex_id: str) -> bytes:
    raw = hashlib.sha256(f"rdplab-exercise-seal:{seed}:{ex_id}".encode()).digest()
    return base64.urlsafe_b64encode(raw)


def seal(data: dict[str, Any], seed: int, ex_id: str) -> str:
    packed = zlib.compress(json.dumps(data, sort_keys=True).encode(), 9)
    return Fernet(_key(seed, ex_id)).encrypt(packed).decode()


def unseal(token: str, seed: int, ex_id: str, where: str) -> dict[str, Any]:
    try:
        packed = Fernet(_key(seed, ex_id)).decrypt(token.encode())
        data = json.loads(zlib.decompress(packed))
    except (InvalidToken, ValueError, zlib.error):
        raise StateError(
            f"{where}: the sealed answer does not open with this exercise's seed and id"
            " (was the file edited?)"
        ) from None
    if not isinstance(data, dict):
        raise StateError(f"{where}: the sealed answer is not an exercise answer")
    return data


@dataclass
class ExerciseState:
    exercise: str
    seed: int
    faults: int
    lab_file: str
    lab_digest: str
    provider: str
    symptom: dict[str, Any]
    sealed: str
    provider_options: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "rdplab-exercise",
            "exercise": self.exercise,
            "seed": self.seed,
            "faults": self.faults,
            "lab_file": self.lab_file,
            "lab_digest": self.lab_digest,
            "provider": self.provider,
            "provider_options": dict(self.provider_options),
            "symptom": self.symptom,
            "sealed": self.sealed,
        }

    def answer(self, where: str) -> dict[str, Any]:
        return unseal(self.sealed, self.seed, self.exercise, where)


def save(state: ExerciseState, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise StateError(f"{path}: cannot write the exercise state ({exc.strerror})") from None


def load(path: Path) -> ExerciseState:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StateError(
            f"{path}: no exercise here; start one with `rdplab exercise new`"
            " (or point --state at its file)"
        ) from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read the exercise state ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path}: not an exercise state file (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "rdplab-exercise":
        raise StateError(f"{path}: not an exercise state file (no kind: rdplab-exercise)")
    if data.get("format") != FORMAT:
        raise StateError(f"{path}: format {data.get('format')!r}, this rdplab reads {FORMAT}")
    try:
        return ExerciseState(
            exercise=str(data["exercise"]),
            seed=int(data["seed"]),
            faults=int(data["faults"]),
            lab_file=str(data["lab_file"]),
            lab_digest=str(data["lab_digest"]),
            provider=str(data["provider"]),
            symptom=dict(data["symptom"]),
            sealed=str(data["sealed"]),
            provider_options={str(k): str(v) for k, v in data["provider_options"].items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path}: not an exercise state file (field {exc})") from None
