"""Windows facts rdplab relies on: registry paths, rule names, ports, services.

Every value here carries its source; the long form with links is docs/sources.md.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- Terminal Server settings (Microsoft Learn, "Change the listening port for Remote
#    Desktop"; "Configure server authentication and encryption levels"; sources.md s3, s10)
TS_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server"
RDP_TCP_KEY = TS_KEY + r"\WinStations\RDP-Tcp"
# Group Policy copies under Policies override the preference values above (sources.md s11)
TS_POLICY_KEY = r"HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services"
TS_CLIENT_POLICY_KEY = TS_POLICY_KEY + r"\Client"
# CredSSP Encryption Oracle Remediation (KB 4093492; sources.md s1)
CREDSSP_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System\CredSSP\Parameters"
# RDS client licensing store (Microsoft Learn, RDS licensing troubleshooting; sources.md s7)
MSLICENSING_KEY = r"HKLM\SOFTWARE\Microsoft\MSLicensing"

WATCHED_KEYS = (
    TS_KEY,
    RDP_TCP_KEY,
    TS_POLICY_KEY,
    TS_CLIENT_POLICY_KEY,
    CREDSSP_KEY,
    MSLICENSING_KEY,
    MSLICENSING_KEY + r"\HardwareID",
    MSLICENSING_KEY + r"\Store",
)

DEFAULT_RDP_PORT = 3389
# Remote Desktop (WebSocket) rules: RemoteDesktop-In-TCP-WS 3387, -WSS 3392 (sources.md s9)
WEBSOCKET_PORTS = (3387, 3392)
# The process behind each listener, as the rules scope them: RDP-Tcp runs in svchost
# (TermService), the WebSocket listener in the kernel (program "System").
TS_PROGRAM = r"%SystemRoot%\system32\svchost.exe"
WS_PROGRAM = "System"
RD_GROUP = "Remote Desktop"
RD_WS_GROUP = "Remote Desktop (WebSocket)"

TERMSERVICE = "TermService"

# System-log events when the RDP certificate's private key is unusable (Microsoft Learn,
# "Troubleshoot Azure VM RDP connection issues by Event ID", scenario 1; sources.md s6)
RCM_PROVIDER = "Microsoft-Windows-TerminalServices-RemoteConnectionManager"
SCHANNEL_PROVIDER = "Schannel"
EVENT_CERT_CREATE_FAILED = 1057  # failed to create a new self-signed certificate
EVENT_CERT_REPLACE_FAILED = 1058  # failed to replace the expired self-signed certificate
EVENT_TLS_KEY_ACCESS_FAILED = 36870  # fatal error accessing the TLS server credential key
SEC_E_UNKNOWN_CREDENTIALS = 0x8009030D  # the code 36870 reports
CERT_KEY_EVENTS = (
    f"{RCM_PROVIDER}/{EVENT_CERT_CREATE_FAILED}",
    f"{RCM_PROVIDER}/{EVENT_CERT_REPLACE_FAILED}",
    f"{SCHANNEL_PROVIDER}/{EVENT_TLS_KEY_ACCESS_FAILED}",
)
WATCHED_SERVICES = ("TermService", "SessionEnv", "UmRdpService", "Dnscache")

# SecurityLayer values (sources.md s4)
SECURITY_LAYER_RDP, SECURITY_LAYER_NEGOTIATE, SECURITY_LAYER_TLS = 0, 1, 2

# AuthenticationLevel ("Configure server authentication for client"; the RDP client's
# TS_SERVER_AUTH_* values, sources.md s3). 3 exists only in the client's own setting, the
# .rdp property "authentication level" (0-3): "no authentication requirement specified".
SERVER_AUTH_NONE, SERVER_AUTH_REQUIRE, SERVER_AUTH_ATTEMPT = 0, 1, 2
SERVER_AUTH_UNSPECIFIED = 3
# The .rdp property's documented default ("authentication level", "The default value is 3";
# Microsoft Learn, Remote Desktop Services .rdp settings / "Supported RDP properties";
# sources.md s3). Used when no policy sets AuthenticationLevel: rdplab does not read the
# user's .rdp files or mstsc's saved settings.
RDP_FILE_AUTHENTICATION_LEVEL_DEFAULT = SERVER_AUTH_UNSPECIFIED

# Where Group Policy writes each policy value rdplab reads or writes, from the shipped
# ADMX (TerminalServer.admx policy in the comment; CredSsp.admx for the oracle; sources.md
# s1-s4). A change made "as the policy would" must use this key, nothing else.
POLICY_LOCATIONS = {
    "fDenyTSConnections": TS_POLICY_KEY,  # TS_DISABLE_CONNECTIONS
    "SecurityLayer": TS_POLICY_KEY,  # TS_SECURITY_LAYER_POLICY
    "UserAuthentication": TS_POLICY_KEY,  # TS_USER_AUTHENTICATION_POLICY
    "MinEncryptionLevel": TS_POLICY_KEY,  # TS_ENCRYPTION_POLICY
    "AuthenticationLevel": TS_POLICY_KEY,  # TS_SERVER_AUTH (not the \Client subkey)
    "fClientDisableUDP": TS_CLIENT_POLICY_KEY,  # TS_CLIENT_TURN_OFF_UDP
    "EnableHardwareMode": TS_CLIENT_POLICY_KEY,  # TS_CLIENT_DISABLE_HARDWARE_MODE
    "fUsbRedirectionEnableMode": TS_CLIENT_POLICY_KEY,  # TS_USB_REDIRECTION_DISABLE
    "AllowCertRevocationCheck": TS_CLIENT_POLICY_KEY,  # no ADMX: the seed article's claim (s2)
    "AllowEncryptionOracle": CREDSSP_KEY,  # Encryption Oracle Remediation
}

# AllowEncryptionOracle values (KB 4093492; sources.md s1)
ORACLE_FORCE_UPDATED, ORACLE_MITIGATED, ORACLE_VULNERABLE = 0, 1, 2
ORACLE_NAMES = {0: "Force Updated Clients", 1: "Mitigated", 2: "Vulnerable"}

# The CredSSP fix (CVE-2018-0886) shipped in the March 2018 updates and became enforcing by
# default (Mitigated) in May 2018. Each row: a build family, the first tspkg.dll version
# with the fix and the May 2018 updates that carry it. Every row of the tspkg.dll table in
# KB 4295591 ("Error when you try to RDP to a Windows VM in Azure: CredSSP encryption
# oracle remediation", section "How to verify that the CredSSP update is installed";
# docs/sources.md s1), in the article's order.


@dataclass(frozen=True)
class CredSSPFix:
    family: str  # major.minor.build of the OS, as tspkg.dll's version starts
    os: str
    tspkg: str  # first tspkg.dll version with the fix
    kbs: tuple[str, ...]  # the May 2018 updates that carry it


CREDSSP_FIXES = (
    CredSSPFix(
        "6.1.7601",
        "Windows 7 SP1 / Windows Server 2008 R2 SP1",
        "6.1.7601.24117",
        ("KB4103718", "KB4103712"),
    ),
    CredSSPFix("6.2.9200", "Windows Server 2012", "6.2.9200.22432", ("KB4103730", "KB4103726")),
    CredSSPFix(
        "6.3.9600",
        "Windows 8.1 / Windows Server 2012 R2",
        "6.3.9600.18999",
        ("KB4103725", "KB4103715"),
    ),
    CredSSPFix(
        "10.0.14393",
        "Windows 10 1607 / Windows Server 2016",
        "10.0.14393.2248",
        ("KB4103723",),
    ),
    CredSSPFix("10.0.15063", "Windows 10 1703", "10.0.15063.1088", ("KB4103731",)),
    CredSSPFix(
        "10.0.16299",
        "Windows 10 1709 / Windows Server 1709",
        "10.0.16299.431",
        ("KB4103727",),
    ),
)
CREDSSP_FIXED_TSPKG = {f.family: f.tspkg for f in CREDSSP_FIXES}

# ASSUMPTION, not a Microsoft statement: builds from Windows 10 1803 (17134) on carry the
# fix from their first release. KB 4295591's table ends at 1709, and Microsoft's
# CVE-2018-0886 record lists as affected only releases up to Windows 10 1709 and Windows
# Server 1709 (1803 shipped after the March 2018 fix); no page says "1803 includes it"
# (docs/sources.md s1).
CREDSSP_FIRST_FIXED_BUILD = 17134
# ASSUMPTION: affected families with no tspkg.dll row in KB 4295591 (Windows Server 2008
# SP2 6.0.6002, Windows 10 1507 10240 and 1511 10586; Windows 8 shares 6.2.9200 with
# Server 2012) are judged unpatched: the article gives no version to compare with. A live
# probe of a host's CredSSP version (probe.py) overrides this for hosts.


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def credssp_fix_for(tspkg_version: str) -> CredSSPFix | None:
    """The KB 4295591 row for this tspkg.dll's build family, or None."""
    family = ".".join(str(p) for p in _ver(tspkg_version)[:3])
    return next((f for f in CREDSSP_FIXES if f.family == family), None)


def credssp_patched(tspkg_version: str) -> bool:
    """Whether a tspkg.dll of this version carries the CVE-2018-0886 fix."""
    parts = _ver(tspkg_version)
    row = credssp_fix_for(tspkg_version)
    if row is not None:
        return parts >= _ver(row.tspkg)
    return parts[0] >= 10 and parts[2] >= CREDSSP_FIRST_FIXED_BUILD


# KBs the twin knows how to install: KB -> (build family, tspkg version after install),
# every update named in KB 4295591's table.
KNOWN_UPDATES = {kb: (f.family, f.tspkg) for f in CREDSSP_FIXES for kb in f.kbs}
