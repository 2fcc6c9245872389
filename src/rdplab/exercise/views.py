"""Read-only views of a twin, laid out the way the Windows tool a trainee would use on the
real machine prints them. Each view starts with that command, so the trainee learns it.

Sources for the layouts (docs/sources.md s15):
- ``reg query``: Microsoft Learn, "reg query" (windows-commands/reg-query) gives the
  syntax; it shows no sample output. The layout used here (the key's full hive name on its
  own line, then one line per value indented four spaces: name, type, data separated by
  four spaces; REG_DWORD as 0x-prefixed lowercase hex; REG_BINARY as uppercase hex; subkeys
  listed by full path after a blank line; "ERROR: The system was unable to find the
  specified registry key or value." and exit code 1 for a missing key) is reg.exe's
  output, as ReactOS's reimplementation (base/applications/cmdutils/reg/query.c) writes it.
- ``Get-NetFirewallRule``: Microsoft Learn, "Get-NetFirewallRule" (NetSecurity module).
  The twin has no Description, Group resource string or policy store, so the listing keeps
  the properties it has; the port and program lines are what ``Get-NetFirewallPortFilter``
  and ``Get-NetFirewallApplicationFilter`` show for the rule.
- ``Get-Service`` (Status, Name, DisplayName; StartType selected as well),
  ``Get-ChildItem Cert:\\LocalMachine\\<store>``, ``Get-DnsClientCache``, ``Get-HotFix``:
  Microsoft Learn pages of those cmdlets. The private-key line of the certificate view is
  rdplab's: no one PowerShell property says whether the MachineKeys file opens (on Windows,
  ``certutil -verifystore`` fails and TermService logs event 1057; sources.md s6).
"""

from __future__ import annotations

from collections.abc import Callable

from rdplab import windows as win
from rdplab.errors import RdplabError
from rdplab.twin import Twin
from rdplab.twin.firewall import Rule
from rdplab.twin.registry import normalize_key

_HIVE_NAMES = {"HKLM": "HKEY_LOCAL_MACHINE", "HKCU": "HKEY_CURRENT_USER"}
REG_NOT_FOUND = "ERROR: The system was unable to find the specified registry key or value."

#: display names of the services the lab watches (what Get-Service prints beside the name)
SERVICE_NAMES = {
    "TermService": "Remote Desktop Services",
    "SessionEnv": "Remote Desktop Configuration",
    "UmRdpService": "Remote Desktop Services UserMode Port Redirector",
    "Dnscache": "DNS Client",
    "WinRM": "Windows Remote Management (WS-Management)",
}


class ViewError(RdplabError):
    """What the tool itself would answer with an error (exit code 1, like reg.exe)."""

    exit_code = 1


def full_key(path: str) -> str:
    norm = normalize_key(path)
    hive, _, rest = norm.partition("\\")
    return _HIVE_NAMES[hive] + ("\\" + rest if rest else "")


def _reg_data(kind: str, data: object) -> str:
    if kind in ("REG_DWORD", "REG_QWORD"):
        return f"0x{data:x}"
    if kind == "REG_MULTI_SZ":
        return "\\0".join(data) if isinstance(data, list) else str(data)
    if kind == "REG_BINARY":
        return str(data).upper()
    return str(data)


def registry(twin: Twin, key: str | None, recurse: bool = False) -> str:
    """``reg query KEY [/s]``."""
    if not key:
        raise RdplabError(f"registry needs a key, e.g. '{win.TS_KEY}'")
    try:
        start = twin.registry.key(key)
    except RdplabError as exc:
        raise RdplabError(f"registry key {key!r}: {exc}") from None
    lines = [f'PS C:\\> reg query "{full_key(key)}"{" /s" if recurse else ""}', ""]
    if start is None:
        raise ViewError("\n".join([*lines[:1], REG_NOT_FOUND]))
    for k in twin.registry.tree(key) if recurse else [start]:
        lines.append(full_key(k.path))
        for v in sorted(k.values.values(), key=lambda v: v.name.lower()):
            lines.append(f"    {v.name or '(Default)'}    {v.type}    {_reg_data(v.type, v.data)}")
        lines.append("")
    if not recurse:
        for sub in twin.registry.subkeys(key):
            lines.append(f"{full_key(start.path)}\\{sub}")
    return "\n".join(lines).rstrip() + "\n"


def _rule(r: Rule) -> list[str]:
    profiles = ", ".join(r.profiles) if r.profiles else "Any"
    rows = [
        ("Name", r.name),
        ("DisplayName", r.display_name or r.name),
        ("DisplayGroup", r.group),
        ("Enabled", "True" if r.enabled else "False"),
        ("Profile", profiles),
        ("Direction", "Inbound" if r.direction == "In" else "Outbound"),
        ("Action", r.action),
        ("Protocol", r.protocol),
        ("LocalPort", ", ".join(r.local_port)),
        ("RemotePort", ", ".join(r.remote_port)),
        ("Program", r.program),
    ]
    return [f"{name:<12} : {value}" for name, value in rows] + [""]


def firewall(twin: Twin, group: str | None = None) -> str:
    """``Get-NetFirewallRule [-DisplayGroup GROUP]``, with each rule's port and program."""
    rules = twin.firewall.rules
    command = "Get-NetFirewallRule"
    if group:
        command += f" -DisplayGroup '{group}'"
        rules = [r for r in rules if r.group.lower() == group.lower()]
        if not rules:
            groups = sorted({r.group for r in twin.firewall.rules if r.group})
            raise ViewError(
                f"PS C:\\> {command}\nGet-NetFirewallRule : No MSFT_NetFirewallRule objects"
                f" found with property 'DisplayGroup' equal to '{group}'."
                f"\n(groups on {twin.name}: {', '.join(groups)})"
            )
    lines = [f"PS C:\\> {command}", ""]
    active = twin.firewall.active_profile
    lines.append(f"(active profile: {active})")
    for name, p in twin.firewall.profiles.items():
        lines.append(
            f"(profile {name}: Enabled {p.enabled}, DefaultInboundAction {p.default_inbound},"
            f" DefaultOutboundAction {p.default_outbound})"
        )
    lines.append("")
    for r in rules:
        lines.extend(_rule(r))
    return "\n".join(lines).rstrip() + "\n"


def services(twin: Twin, name: str | None = None) -> str:
    """``Get-Service | Select-Object Status, StartType, Name, DisplayName``."""
    snap = twin.services.snapshot()
    names = sorted(snap, key=str.lower)
    if name:
        names = [n for n in names if n.lower() == name.lower()]
        if not names:
            raise ViewError(
                f"PS C:\\> Get-Service -Name {name}\nGet-Service : Cannot find any service"
                f" with service name '{name}'."
            )
    cmd = "Get-Service" + (f" -Name {name}" if name else "")
    lines = [f"PS C:\\> {cmd} | Select-Object Status, StartType, Name, DisplayName", ""]
    lines.append(f"{'Status':<8} {'StartType':<10} {'Name':<14} DisplayName")
    lines.append(f"{'------':<8} {'---------':<10} {'----':<14} -----------")
    for n in names:
        s = snap[n]
        lines.append(f"{s['status']:<8} {s['start_type']:<10} {n:<14} {SERVICE_NAMES.get(n, n)}")
    return "\n".join(lines) + "\n"


def certificates(twin: Twin, store: str | None = None) -> str:
    """``Get-ChildItem 'Cert:\\LocalMachine\\STORE' | Format-List ...``."""
    store = store or "Remote Desktop"
    stores = {s.lower(): s for s in twin.certs.stores}
    real = stores.get(store.lower(), store)
    cmd = (
        f"PS C:\\> Get-ChildItem 'Cert:\\LocalMachine\\{real}' | Format-List Subject, Issuer,"
        " Thumbprint, NotBefore, NotAfter, HasPrivateKey"
    )
    if store.lower() not in stores:
        raise ViewError(
            f"{cmd}\nGet-ChildItem : Cannot find path 'LocalMachine\\{store}' because it does"
            f" not exist.\n(stores on {twin.name}: {', '.join(sorted(twin.certs.stores))})"
        )
    lines = [cmd, ""]
    for entry in twin.certs.entries(real):
        d = entry.describe()
        status = twin.certs.key_status(entry)
        lines += [
            f"Subject       : {d['subject']}",
            f"Issuer        : {d['issuer']}",
            f"Thumbprint    : {d['thumbprint']}",
            f"NotBefore     : {d['not_before']}",
            f"NotAfter      : {d['not_after']}",
            f"HasPrivateKey : {status != 'missing'}",
            f"  (rdplab: private key file MachineKeys\\{d['key_file']}:"
            f" {'opens' if status == 'ok' else 'does not open (' + status + ')'})",
        ]
        if d["cdp"]:
            lines.append(f"  (CRL Distribution Points: {', '.join(d['cdp'])})")
        lines.append("")
    if len(lines) == 2:
        lines.append("(the store is empty)")
    return "\n".join(lines).rstrip() + "\n"


def dns(twin: Twin, name: str | None = None) -> str:
    """The hosts file (``Get-Content``) and ``Get-DnsClientCache``."""
    hosts = twin.dns.snapshot()["hosts"]
    lines = ["PS C:\\> Get-Content C:\\Windows\\System32\\drivers\\etc\\hosts", ""]
    lines.append("# Copyright (c) 1993-2009 Microsoft Corp.")
    lines.append("# (the stock comment block is left out)")
    for host, address in sorted(hosts.items()):
        if not name or host.lower() == name.lower():
            lines.append(f"{address:<16} {host}")
    lines += ["", "PS C:\\> Get-DnsClientCache" + (f" -Entry {name}" if name else ""), ""]
    lines.append(f"{'Entry':<24} {'RecordName':<24} {'Type':<5} {'Status':<8} {'Section':<8} Data")
    lines.append(f"{'-----':<24} {'----------':<24} {'----':<5} {'------':<8} {'-------':<8} ----")
    for entry, address in sorted(twin.dns.cache.items()):
        if not name or entry.lower() == name.lower():
            lines.append(f"{entry:<24} {entry:<24} {'A':<5} {'Success':<8} {'Answer':<8} {address}")
    return "\n".join(lines) + "\n"


def ip(twin: Twin, arg: str | None = None) -> str:
    """``Get-NetIPAddress -AddressFamily IPv4`` and whether DHCP is on (``Get-NetIPInterface``)."""
    lines = ["PS C:\\> Get-NetIPAddress -AddressFamily IPv4 | Format-Table", ""]
    lines.append(f"{'InterfaceAlias':<16} {'IPAddress':<16} {'PrefixLength':<13} PrefixOrigin")
    lines.append(f"{'--------------':<16} {'---------':<16} {'------------':<13} ------------")
    interfaces = twin.ip.snapshot().get("interfaces", [])
    for i in interfaces:
        for a in i["addresses"]:
            lines.append(f"{i['alias']:<16} {a['address']:<16} {a['prefix']:<13} {a['origin']}")
    lines += [
        "",
        "PS C:\\> Get-NetIPInterface -AddressFamily IPv4 | Select InterfaceAlias, Dhcp",
        "",
    ]
    for i in interfaces:
        lines.append(f"{i['alias']:<16} {'Enabled' if i['dhcp'] else 'Disabled'}")
    return "\n".join(lines) + "\n"


def licensing(twin: Twin, arg: str | None = None) -> str:
    """``reg query HKLM\\SOFTWARE\\Microsoft\\MSLicensing /s`` (the client's license store)."""
    return registry(twin, win.MSLICENSING_KEY, recurse=True)


def updates(twin: Twin, arg: str | None = None) -> str:
    """``Get-HotFix`` and the tspkg.dll version (how KB 4295591 says to check CredSSP)."""
    lines = ["PS C:\\> Get-HotFix | Select-Object Source, Description, HotFixID", ""]
    lines.append(f"{'Source':<16} {'Description':<16} HotFixID")
    lines.append(f"{'------':<16} {'-----------':<16} --------")
    for kb in sorted(twin.hotfixes):
        if not arg or kb.lower() == arg.lower():
            lines.append(f"{twin.name:<16} {'Security Update':<16} {kb}")
    lines += [
        "",
        "PS C:\\> (Get-Item C:\\Windows\\System32\\tspkg.dll).VersionInfo.FileVersion",
        twin.tspkg_version,
    ]
    return "\n".join(lines) + "\n"


View = Callable[[Twin, "str | None"], str]

#: area -> (view, what ARG means). A new view is one function plus one line here.
AREAS: dict[str, tuple[View, str]] = {
    "registry": (
        registry,
        "a key, e.g. 'HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server'",
    ),
    "firewall": (firewall, "a rule DisplayGroup, e.g. 'Remote Desktop' (default: every rule)"),
    "services": (services, "a service name (default: every service)"),
    "certificates": (certificates, "a LocalMachine store (default: 'Remote Desktop')"),
    "dns": (dns, "a host name (default: every entry): the hosts file and the DNS cache"),
    "licensing": (licensing, "(none): the client's MSLicensing store"),
    "updates": (updates, "a KB id (default: every installed update), and tspkg.dll's version"),
    "ip": (ip, "(none): the IPv4 addresses, where they came from, and DHCP"),
}
