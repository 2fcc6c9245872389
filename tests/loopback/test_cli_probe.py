"""``rdplab probe`` as a user runs it (a subprocess), against the loopback RDP responder in
every way the responder can answer: its ``--json`` contract, its exit codes, and that it is
the live probe the real providers use (the same result as ``rdplab.probe.probe``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from rdplab.cli.probe import probe_json
from rdplab.connection import (
    HYBRID_REQUIRED_BY_SERVER,
    PROTOCOL_HYBRID,
    PROTOCOL_SSL,
    SSL_CERT_NOT_ON_SERVER,
    SSL_NOT_ALLOWED_BY_SERVER,
    SSL_REQUIRED_BY_SERVER,
)
from rdplab.probe import probe

from .test_probe import free_port, rdp_responder

pytestmark = pytest.mark.winrm_loopback  # the loopback network suite (no sshd needed)

KEYS = {
    "target",
    "ok",
    "failed_stage",
    "selected_protocol",
    "failure_code",
    "certificate",
    "credssp_version",
    "stages",
    "not_probed",
    "notes",
    "error",
}


def rdplab_probe(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "probe", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if doc:
        assert set(doc) == KEYS, doc
    return proc.returncode, doc, proc.stderr


def test_negotiation_tls_and_credssp_version() -> None:
    with rdp_responder() as r:
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}")
        assert r.requested() == PROTOCOL_SSL | PROTOCOL_HYBRID  # as mstsc: TLS and CredSSP
        assert r.ts_requests == [6]  # the first TSRequest: a version, no credentials
    assert rc == 0
    assert doc["target"] == f"127.0.0.1:{r.port}"
    assert doc["ok"] is True and doc["failed_stage"] is None and doc["error"] is None
    assert doc["selected_protocol"] == "PROTOCOL_HYBRID"
    assert doc["failure_code"] is None and doc["credssp_version"] == 6
    assert [(s["name"], s["ok"]) for s in doc["stages"]] == [
        ("name-resolution", True),
        ("tcp", True),
        ("x224", True),
        ("tls", True),
    ]
    cert = doc["certificate"]
    assert cert["sha1"] == r.thumbprint and cert["sha1"] == cert["sha1"].upper()
    assert cert["subject"] == "CN=HOST" and cert["issuer"] == "CN=HOST"
    assert cert["self_signed"] is True
    assert cert["not_after"][:4].isdigit() and cert["not_after"].endswith("+00:00")
    assert set(doc["not_probed"]) == {"credssp", "licensing"}


def test_tls_only_and_server_name() -> None:
    with rdp_responder() as r:
        rc, doc, _ = rdplab_probe(
            f"127.0.0.1:{r.port}", "--protocols", "tls", "--server-name", "host.rdplab.test"
        )
        assert r.requested() == PROTOCOL_SSL
    assert rc == 0 and doc["selected_protocol"] == "PROTOCOL_SSL"
    assert doc["credssp_version"] is None and "credssp" not in doc["not_probed"]


def test_unpatched_credssp_version() -> None:
    with rdp_responder(credssp_version=3) as r:
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}")
    assert rc == 0 and doc["credssp_version"] == 3
    assert any("without the 2018 CredSSP update" in n for n in doc["notes"])


def test_legacy_server_selects_standard_rdp_security() -> None:
    with rdp_responder("legacy") as r:
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}")
    assert rc == 0 and doc["selected_protocol"] == "PROTOCOL_RDP"
    assert doc["certificate"] is None and [s["name"] for s in doc["stages"]][-1] == "x224"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (SSL_REQUIRED_BY_SERVER, "SSL_REQUIRED_BY_SERVER"),
        (SSL_NOT_ALLOWED_BY_SERVER, "SSL_NOT_ALLOWED_BY_SERVER"),
        (SSL_CERT_NOT_ON_SERVER, "SSL_CERT_NOT_ON_SERVER"),
        (HYBRID_REQUIRED_BY_SERVER, "HYBRID_REQUIRED_BY_SERVER"),
    ],
)
def test_negotiation_failure(code: int, name: str) -> None:
    with rdp_responder("failure", code) as r:
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}")
    assert rc == 1
    assert doc["ok"] is False and doc["failed_stage"] == "x224"
    assert doc["failure_code"] == code and isinstance(doc["failure_code"], int)
    assert doc["selected_protocol"] is None and doc["certificate"] is None
    assert name in doc["error"] and doc["error"] == doc["stages"][-1]["detail"]


@pytest.mark.parametrize(
    ("mode", "stage", "error"),
    [
        ("garbage", "x224", "answered something that is not an X.224 Connection Confirm"),
        ("close", "x224", "closed the connection instead of an X.224 Connection Confirm"),
        ("no-tls", "tls", "TLS handshake with 127.0.0.1:"),
        ("tls-reset", "tls", "TLS handshake with 127.0.0.1:"),
    ],
)
def test_misbehaving_server(mode: str, stage: str, error: str) -> None:
    with rdp_responder(mode) as r:
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}")
    assert rc == 1 and doc["failed_stage"] == stage
    assert error in doc["error"]
    assert doc["failure_code"] is None


def test_silent_server_costs_at_most_the_timeout() -> None:
    with rdp_responder("silent") as r:
        start = time.monotonic()
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}", "--timeout", "0.5")
        took = time.monotonic() - start
    assert rc == 1 and doc["failed_stage"] == "x224"
    assert doc["error"].endswith("sent no X.224 Connection Confirm within 0.5s")
    assert took < 10  # the interpreter's start-up plus half a second, not the server's 30s


@pytest.mark.parametrize(("listener", "error"), [("closed", "refused"), ("drop", "timed out")])
def test_listener_refuses_or_drops(listener: str, error: str) -> None:
    with rdp_responder() as r:
        r.set_listener(listener)
        rc, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}", "--timeout", "0.5")
    assert rc == 1 and doc["failed_stage"] == "tcp" and error in doc["error"]
    assert [s["name"] for s in doc["stages"]] == ["name-resolution", "tcp"]


def test_name_does_not_resolve() -> None:
    rc, doc, _ = rdplab_probe("no-such-host.invalid", "--timeout", "3")
    assert rc == 1 and doc["failed_stage"] == "name-resolution"
    assert doc["target"] == "no-such-host.invalid:3389"
    assert doc["error"].startswith("no-such-host.invalid does not resolve")


def test_the_command_is_the_providers_probe() -> None:
    """One code path: the command's answer is what ``rdplab.probe.probe`` (the real
    providers' connect step) returns for the same listener, field for field."""
    for mode, code in [("negotiate", 0), ("failure", SSL_NOT_ALLOWED_BY_SERVER), ("garbage", 0)]:
        with rdp_responder(mode, code) as r:
            _, doc, _ = rdplab_probe(f"127.0.0.1:{r.port}")
            direct = probe_json(f"127.0.0.1:{r.port}", probe("127.0.0.1", r.port))
        assert doc == direct, mode


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1:0"], "error: '127.0.0.1:0': the port must be a number from 1 to 65535"),
        (["127.0.0.1:rdp"], "error: '127.0.0.1:rdp': the port must be a number from 1 to 65535"),
        (["127.0.0.1", "--protocols", "tls,ntlm"], "error: --protocols 'tls,ntlm': unknown ntlm"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    rc, doc, err = rdplab_probe(*args)
    assert rc == 2 and doc == {}
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_ipv6_target() -> None:
    port = free_port()  # nothing listens there
    rc, doc, _ = rdplab_probe(f"[::1]:{port}", "--timeout", "1")
    assert doc["target"] == f"[::1]:{port}" and rc == 1
    assert doc["failed_stage"] == "tcp"


def test_text_output_for_people() -> None:
    with rdp_responder() as r:
        proc = subprocess.run(
            [sys.executable, "-m", "rdplab", "probe", f"127.0.0.1:{r.port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert text.startswith(f"127.0.0.1:{r.port}: reachable")
    assert "ok x224" in text and "ok tls" in text
    assert "selected protocol: PROTOCOL_HYBRID" in text and "CredSSP version: 6" in text
    assert "(self-signed)" in text and "SHA-1 " in text
    assert "not probed: licensing" in text
