"""Windows facts rdplab relies on: registry paths, rule names, ports, services.

Every value here carries its source; the long form with links is docs/sources.md.
"""

from __future__ import annotations

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
WATCHED_SERVICES = ("TermService", "SessionEnv", "UmRdpService", "Dnscache")

# SecurityLayer values (sources.md s4)
SECURITY_LAYER_RDP, SECURITY_LAYER_NEGOTIATE, SECURITY_LAYER_TLS = 0, 1, 2

# AuthenticationLevel ("Configure server authentication for client"; the RDP client's
# TS_SERVER_AUTH_* values, sources.md s3)
SERVER_AUTH_NONE, SERVER_AUTH_REQUIRE, SERVER_AUTH_ATTEMPT = 0, 1, 2

# AllowEncryptionOracle values (KB 4093492; sources.md s1)
ORACLE_FORCE_UPDATED, ORACLE_MITIGATED, ORACLE_VULNERABLE = 0, 1, 2
ORACLE_NAMES = {0: "Force Updated Clients", 1: "Mitigated", 2: "Vulnerable"}

# The CredSSP fix shipped in the March 2018 updates and became enforcing by default
# (Mitigated) in May 2018. tspkg.dll file versions from which a build has it
# (sources.md s1). Builds newer than these families include it from RTM.
CREDSSP_FIXED_TSPKG = {
    "6.1.7601": "6.1.7601.24117",  # Windows 7 SP1 / Server 2008 R2
    "6.3.9600": "6.3.9600.18999",  # Windows 8.1 / Server 2012 R2
    "10.0.14393": "10.0.14393.2248",  # Windows 10 1607 / Server 2016 (KB4103723)
}
CREDSSP_FIRST_FIXED_BUILD = 17134  # Windows 10 1803 shipped with the fix


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def credssp_patched(tspkg_version: str) -> bool:
    """Whether a tspkg.dll of this version carries the CVE-2018-0886 fix."""
    parts = _ver(tspkg_version)
    family = ".".join(str(p) for p in parts[:3])
    if family in CREDSSP_FIXED_TSPKG:
        return parts >= _ver(CREDSSP_FIXED_TSPKG[family])
    return parts[0] >= 10 and parts[2] >= CREDSSP_FIRST_FIXED_BUILD


# KBs the twin knows how to install: KB -> (build family, tspkg version after install)
KNOWN_UPDATES = {"KB4103723": ("10.0.14393", "10.0.14393.2248")}
