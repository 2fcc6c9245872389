"""rdp-cert-corrupt as Microsoft documents it: what the user sees ("An internal error has
occurred"), the host's System-log events (TermService 1057/1058, Schannel 36870
0x8009030D) recorded by the twin and cited by the detector, and the documented repair
(docs/sources.md s6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rdplab import windows as win
from rdplab.catalog import rdp_cert_corrupt as cert
from rdplab.catalog.base import DetectContext
from rdplab.connection import connect
from rdplab.errors import BackendError
from rdplab.facts import Facts
from rdplab.network import Network
from rdplab.ops import Op
from rdplab.scenario import gather_args
from rdplab.twin import Twin
from rdplab.twin.certs import RD_STORE

RCM_1057 = f"{win.RCM_PROVIDER}/1057"
SCHANNEL_36870 = "Schannel/36870"


def _ids(events: list[dict[str, Any]] | None) -> list[str]:
    return [f"{e['provider']}/{e['id']}" for e in events or []]


def _ctx(client: Twin, host: Twin, net: Network) -> DetectContext:
    """Gather as the scenario runner does: each machine with what the faults ask for."""
    host_facts = Facts.parse("host", host.gather(gather_args("host", net, {})))
    client_facts = Facts.parse(
        "client", client.gather(gather_args("client", net, {"host": host_facts}))
    )
    return DetectContext(client_facts, host_facts, net)


def _break(host: Twin, apply_ok: Callable[..., Any]) -> None:
    apply_ok(host, list(cert.FAULT.placements[0].breaks["host"]))


def test_symptom_and_explanation_say_what_microsoft_and_the_seed_say() -> None:
    f = cert.FAULT
    assert f.symptom.message.startswith("An internal error has occurred.")
    assert "An internal error has occurred" in f.symptom.code_source
    assert "0x904" in f.symptom.code_source and "seed article" in f.symptom.code_source
    assert (f.symptom.error_code, f.symptom.extended_code) == ("0x904", "0x7")
    text = f.explanation
    assert "'An internal error has occurred'" in text and "0x904" in text
    for fact in ("1057", "1058", "36870", "0x8009030D", "Keyset does not exist"):
        assert fact in text, fact
    for service in ("CertPropSvc", "KeyIso", "CryptSvc", "SessionEnv"):
        assert service in text and service in f.placements[0].fixes[0].summary
    assert "MachineKeys" in text and "Everyone Read and Write" in text


def test_sources_cite_general_troubleshooting_for_delete_and_restart() -> None:
    sources = " | ".join(cert.FAULT.sources)
    assert "General Remote Desktop connection troubleshooting" in sources
    assert "delete the certificate, restart Remote Desktop Services" in sources
    assert "Event ID" in sources and "36870" in sources
    assert "internal error has occurred" in sources


def test_termservice_start_with_an_unusable_key_logs_1057(
    host: Twin, apply_ok: Callable[..., Any]
) -> None:
    """The twin keeps the certificate and records what TermService logs."""
    assert host.events.query(win.CERT_KEY_EVENTS) == []
    apply_ok(host, [Op("machinekeys.corrupt", {"store": RD_STORE})])
    assert host.events.query(win.CERT_KEY_EVENTS) == []  # nothing has used the key yet
    result = apply_ok(host, [Op("svc.restart", {"name": win.TERMSERVICE})])
    assert "event 1057" in result.results[0].detail
    (event,) = host.events.query(win.CERT_KEY_EVENTS)
    assert (event["provider"], event["id"], event["level"], event["log"]) == (
        win.RCM_PROVIDER,
        1057,
        "Error",
        "System",
    )
    assert "failed to create a new self signed certificate" in event["message"]


def test_a_tls_attempt_on_an_unusable_key_logs_schannel_36870(
    client: Twin, host: Twin, net: Network, apply_ok: Callable[..., Any]
) -> None:
    apply_ok(host, [Op("machinekeys.corrupt", {"store": RD_STORE})])
    assert connect(client, host, net).failed_stage == "tls"
    (event,) = host.events.query([SCHANNEL_36870])
    assert "0x8009030D" in event["message"] and "private key" in event["message"]


def test_a_healthy_handshake_logs_nothing(client: Twin, host: Twin, net: Network) -> None:
    assert connect(client, host, net).ok
    assert host.events.query(win.CERT_KEY_EVENTS) == []


def test_the_fault_asks_the_host_for_its_events_and_only_the_host() -> None:
    net = Network()
    assert gather_args("host", net, {})["events"] == sorted(win.CERT_KEY_EVENTS)
    assert "events" not in gather_args("client", net, {})


def test_the_detector_cites_the_events_newest_first(
    client: Twin, host: Twin, net: Network, apply_ok: Callable[..., Any]
) -> None:
    _break(host, apply_ok)  # corrupt the key, then TermService restarts on it: 1057
    connect(client, host, net)  # a client tries: Schannel 36870
    (f,) = cert.detect(_ctx(client, host, net))
    assert _ids(f.evidence["events"]) == [SCHANNEL_36870, RCM_1057]
    assert all(e["time"] and e["message"] for e in f.evidence["events"])


def test_facts_without_events_still_detect(
    client: Twin, host: Twin, net: Network, apply_ok: Callable[..., Any]
) -> None:
    """An agent that does not gather events (agent.ps1 today) leaves the section out: the
    facts parse and the detector fires on the certificate alone."""
    _break(host, apply_ok)
    raw = host.gather()
    assert "events" not in raw
    host_facts = Facts.parse("host", raw)
    assert host_facts.events(win.CERT_KEY_EVENTS) is None
    ctx = DetectContext(Facts.parse("client", client.gather()), host_facts, net)
    (f,) = cert.detect(ctx)
    assert "events" not in f.evidence and f.evidence["certificates"]


def test_old_events_alone_do_not_fire(
    client: Twin, host: Twin, net: Network, apply_ok: Callable[..., Any]
) -> None:
    """After the fix the log still holds the errors; the certificate decides."""
    _break(host, apply_ok)
    apply_ok(host, list(cert.FIX.ops["host"]))
    ctx = _ctx(client, host, net)
    assert _ids(ctx.host.events(win.CERT_KEY_EVENTS)) == [RCM_1057]
    assert cert.detect(ctx) == []
    assert connect(client, host, net).ok


def test_events_survive_a_rolled_back_batch(host: Twin, apply_ok: Callable[..., Any]) -> None:
    """A log is not machine state a rollback restores."""
    apply_ok(host, [Op("machinekeys.corrupt", {"store": RD_STORE})])
    result = host.apply(
        [
            Op("svc.restart", {"name": win.TERMSERVICE}),
            Op("svc.start", {"name": "NoSuchService"}),
        ]
    )
    assert result.errors
    assert _ids(host.events.query(win.CERT_KEY_EVENTS)) == [RCM_1057]
    assert "events" not in host.snapshot()


@pytest.mark.parametrize(
    "events",
    ["not a list", [{"provider": "Schannel"}], [{"provider": 1, "id": 36870}], [1]],
)
def test_malformed_events_are_rejected_naming_the_field(host: Twin, events: Any) -> None:
    raw = dict(host.gather(), events=events)
    with pytest.raises(BackendError, match="'events'"):
        Facts.parse("host", raw)
