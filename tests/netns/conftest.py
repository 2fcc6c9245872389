"""Fixtures of the netns suite: real namespaces, real packets (tests/netns/test_netlab.py).

Every test that touches the kernel takes ``lab`` (a factory that builds ``NetLab``s and
closes them afterwards) or ``netns_ready``; both skip, with ``rdplab.netlab.require()``'s
one-line reason, where the machine lacks root, ``ip`` or ``nft`` (and with the pip hint
where dnslib or dpkt is missing). Run ids carry this process's pid in hex and a counter,
so pytest-xdist workers never share a namespace.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rdplab.netlab import NetLab
    from rdplab.netlab.topology import Site
    from rdplab.serve import Identity

_runs = itertools.count()
_MISSING = [m for m in ("dnslib", "dpkt") if importlib.util.find_spec(m) is None]


def pytest_configure(config: pytest.Config) -> None:
    # until pyproject.toml registers it (addopts has --strict-markers)
    config.addinivalue_line("markers", "netns: real packets in Linux network namespaces")


def new_run_id() -> str:
    """Unique in this process (the namespace names add the pid): ``t<pid hex><n>``."""
    return f"t{os.getpid():x}{next(_runs):x}"[-10:]


@pytest.fixture
def netns_ready() -> None:
    if _MISSING:
        pytest.skip(f"the netns lab needs {', '.join(_MISSING)} (pip install {' '.join(_MISSING)})")
    from rdplab.netlab import NetlabUnavailable, require

    try:
        require()
    except NetlabUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def capture_ready(netns_ready: None) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("the netns lab's capture needs tcpdump (apt-get install tcpdump)")


@pytest.fixture
def lab(netns_ready: None) -> Iterator[Callable[..., NetLab]]:
    """``lab(client_site, **plan_fields)`` builds a NetLab with a fresh run id."""
    from rdplab.netlab import NetPlan, build

    made: list[NetLab] = []

    def make(client_site: Site, **fields: Any) -> NetLab:
        fields.setdefault("run_id", new_run_id())
        built = build(NetPlan(client_site=client_site, **fields))
        made.append(built)
        return built

    yield make
    for built in made:
        built.close()


@pytest.fixture(scope="session")
def enterprise_identity() -> Identity:
    """A CA-issued RSA certificate served with its issuing CA: a TLS flight of ~2.1 KB."""
    if _MISSING:
        pytest.skip(f"the netns lab needs {', '.join(_MISSING)}")
    from rdplab.netlab import chain_identity

    return chain_identity()
