"""pytest-testinfra hosts that run over rdplab's own open connections.

pytest-testinfra's ``winrm`` and ``paramiko`` backends open connections of their own from a
host URL, which must then carry the password (``winrm://user:password@host``), and the
paramiko backend accepts unknown host keys with a warning. Instead, the hosts made here
subclass those backends (so commands are quoted the same way) and send every command
through the transport rdplab already opened for the lab machine: the same WinRM shell or
SSH connection, the same authentication, host-key check and timeouts, no secret in a
string. Windows OpenSSH runs commands in cmd.exe by default, and so does a WinRM shell:
``host.run("powershell -NoProfile -Command Get-Service TermService")``.

The lab's router (a Linux gateway over SSH) gets a host the same way, with ``sudo=True``
when its user is not root (testinfra then wraps each command in ``sudo``);
``router_rules(host)`` reads rdplab's own nftables rules through it.
"""

from __future__ import annotations

from typing import Any

from rdplab.transports.base import Transport
from rdplab.transports.ssh import SSHTransport
from rdplab.transports.winrm import WinRMTransport


def testinfra_host(transport: Transport, sudo: bool = False) -> Any:  # noqa: PT028 (not a test)
    """A ``testinfra.host.Host`` whose commands run through ``transport`` (opened);
    ``sudo``: each command runs under ``sudo`` (a Linux router whose user is not root)."""
    try:
        from testinfra.backend.base import BaseBackend, HostSpec
        from testinfra.backend.paramiko import ParamikoBackend
        from testinfra.backend.winrm import WinRMBackend
        from testinfra.host import Host
    except ImportError:  # pragma: no cover - an extra
        raise RuntimeError(
            "pytest-testinfra is not installed: pip install 'rdplab[real]'"
        ) from None

    if isinstance(transport, WinRMTransport):
        base: Any = WinRMBackend
    elif isinstance(transport, SSHTransport):
        base = ParamikoBackend
    else:
        raise TypeError(f"no testinfra backend for {type(transport).__name__}")

    class Backend(base):  # type: ignore[misc]
        NAME = base.NAME

        def __init__(self) -> None:
            # testinfra's BaseBackend only: the subclass constructors would parse a URL
            BaseBackend.__init__(self, transport.host, sudo=sudo)
            self.host = HostSpec(transport.host, None, None, None)
            self.transport = transport

        def run(self, command: str, *args: str, **kwargs: Any) -> Any:
            line = self.get_command(command, *args)
            res = self.transport.run(line)
            return self.result(res.rc, self.encode(line), res.stdout, res.stderr)

        def __repr__(self) -> str:
            return f"<rdplab {self.NAME} testinfra backend for {transport.host}>"

    return Host(Backend())


def router_rules(host: Any) -> dict[str, Any]:
    """rdplab's rules on a router, read with testinfra (``host.check_output("nft -j list
    ruleset")``) and parsed like the SSH router backend's facts: ``forwards`` (port ->
    {port, to, to_port}), ``mss_clamp`` and ``icmp_frag_needed``."""
    import json

    from rdplab.backends import router_ssh

    rules = router_ssh.nft_rules(json.loads(host.check_output("nft -j list ruleset")))
    return {
        "forwards": router_ssh.forwards_of(rules),
        "mss_clamp": router_ssh.has_comment(rules, ("forward",), router_ssh.MSS_COMMENT),
        "icmp_frag_needed": (
            "drop"
            if router_ssh.has_comment(rules, ("forward", "output"), router_ssh.ICMP_COMMENT)
            else "pass"
        ),
    }
