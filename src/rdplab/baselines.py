"""Healthy machine baselines (fixtures/baselines/*.yaml) and building twins from them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rdplab import yamlfile
from rdplab.errors import LabFileError, OpError
from rdplab.twin.certs import RD_STORE, CertStores, make_self_signed
from rdplab.twin.dns import DnsClient
from rdplab.twin.firewall import Firewall
from rdplab.twin.machine import Computer, Twin, clone
from rdplab.twin.registry import Registry
from rdplab.twin.services import Services

BASELINE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "baselines"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OsInfo(_Strict):
    caption: str
    build: str = Field(pattern=r"^\d+\.\d+\.\d+\.\d+$")
    kind: Literal["client", "server"]


class Deviation(_Strict):
    setting: str
    shipped: str
    lab: str
    why: str


class Baseline(_Strict):
    name: str
    title: str
    os: OsInfo
    sources: list[str] = []
    deviations: list[Deviation] = []
    registry: dict[str, dict[str, dict[str, Any]]] = {}
    firewall: dict[str, Any]
    services: dict[str, dict[str, str]]
    certificates: dict[str, list[Literal["self-signed"]]] = {}
    hotfixes: list[str] = []
    tspkg_version: str = Field(pattern=r"^\d+\.\d+\.\d+\.\d+$")
    dns: dict[str, dict[str, str]] = {}


def baseline_dirs(extra: Path | None = None) -> list[Path]:
    return [d for d in (extra, BASELINE_DIR) if d is not None]


@lru_cache(maxsize=32)
def load_baseline(name: str, search: tuple[Path, ...] = (BASELINE_DIR,)) -> Baseline:
    for d in search:
        path = d / f"{name}.yaml"
        if path.exists():
            doc = yamlfile.load(path)
            base = doc.validate(Baseline)
            if base.name != name:
                raise doc.error(("name",), f"must be {name!r}, the file's name")
            _check_twin_parts(doc, base)
            return base
    known = sorted({p.stem for d in search if d.is_dir() for p in d.glob("*.yaml")})
    raise LabFileError(
        ", ".join(str(d) for d in search), f"no baseline named {name!r} (known: {known})"
    )


def _check_twin_parts(doc: yamlfile.Located, base: Baseline) -> None:
    """Validate the parts pydantic leaves loose by building them once."""
    for field, build in (
        ("registry", lambda: Registry.from_json(base.registry)),
        ("firewall", lambda: Firewall.from_json(base.firewall)),
        ("services", lambda: Services.from_json(base.services)),
    ):
        try:
            build()
        except OpError as exc:
            raise doc.error((field,), exc.message) from None


@lru_cache(maxsize=64)
def _template(name: str, computer_name: str, search: tuple[Path, ...]) -> Twin:
    base = load_baseline(name, search)
    certs = CertStores()
    for store, entries in base.certificates.items():
        for _ in entries:
            if store != RD_STORE:
                raise LabFileError(name, f"certificates: only {RD_STORE!r} can be generated")
            certs.add(store, make_self_signed(computer_name))
    return Twin(
        computer=Computer(computer_name, base.os.caption, base.os.build, base.os.kind),
        registry=Registry.from_json(base.registry),
        firewall=Firewall.from_json(base.firewall),
        services=Services.from_json(base.services),
        certs=certs,
        dns=DnsClient.from_json(base.dns),
        hotfixes=list(base.hotfixes),
        tspkg_version=base.tspkg_version,
    )


def build_twin(name: str, computer_name: str, search: tuple[Path, ...] = (BASELINE_DIR,)) -> Twin:
    """A fresh twin in the baseline's healthy state (the template is built once)."""
    return clone(_template(name, computer_name, search))
