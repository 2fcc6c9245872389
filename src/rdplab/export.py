"""Exported remediation scripts: one fix as a standalone Windows PowerShell 5.1 script.

The script is built from the SAME PowerShell that implements the ops in agent.ps1: the
agent parts a fix's ops need (``rdplab.agent.assemble.parts_for_ops``), assembled after a
header (comment-based help, ``[CmdletBinding(SupportsShouldProcess)]``, parameters) and
followed by a short runner. Nothing of an op is written twice.

What the runner does, in order:

1. refuses a fix labelled ``lowers-security`` unless ``-AllowLowerSecurity`` is given
   (exit 2, nothing changed);
2. asks ``ShouldProcess`` for every op: ``-WhatIf`` prints each op it would run and stops
   (exit 0, nothing changed, no folder made); ``-Confirm`` lets the user decline ops;
3. makes the backup folder (``-BackupFolder``, default
   ``C:\\ProgramData\\rdplab\\remediation\\<fault>--<fix>-<UTC time>``), keeps a
   transcript there, and points the registry part's backups (``reg export`` of every key
   before it changes, ``Backup-RegKey``) at it;
4. runs the ops as ONE batch (``Invoke-Batch``): on the first failure everything the batch
   did is undone, newest first; the script then exits 1;
5. prints one line per op and, last, one JSON line ``{"results": [...], "rolled_back": b}``
   (the agent's batch answer), which is how the lab reads what the script changed.

The op batch sits in the script as JSON between ``BATCH_BEGIN`` and ``BATCH_END``;
``read_batch`` reads it back (the loopback emulator and the tests use it to prove that a
script carries exactly its fix's ops).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rdplab import __version__, export_router
from rdplab import catalog as cat
from rdplab.agent.assemble import assemble, parts_for_ops
from rdplab.catalog.base import ALL_ROLES, ROLES, Fault, Fix, Role
from rdplab.errors import RdplabError
from rdplab.network import Network, RouterNet
from rdplab.ops import Op, render_op

BATCH_BEGIN = "# BEGIN RDPLAB BATCH"
BATCH_END = "# END RDPLAB BATCH"
REMEDIATION_DIR = r"C:\ProgramData\rdplab\remediation"
#: Exit codes of an exported script.
EXIT_OK, EXIT_ROLLED_BACK, EXIT_REFUSED = 0, 1, 2


@dataclass(frozen=True)
class Export:
    """One script to write: a fix's ops for one machine, and what its help says."""

    name: str  # file stem: <fault>--<fix-id> (or <scenario>--custom)
    fault: str
    fault_title: str
    fix: Fix
    role: Role
    ops: tuple[Op, ...]
    sources: tuple[str, ...]
    origin: str = "catalog"

    @property
    def filename(self) -> str:
        return f"{self.name}.sh" if self.role == "router" else f"{self.name}.ps1"


def network_for(fault: Fault, network: Network | None = None) -> Network:
    """The network a fault's export is rendered for: the lab's, or the defaults; a fault
    that needs a router gets the default router where the lab has none."""
    net = network or Network()
    if fault.needs_router and net.router is None:
        site = fault.client_site if fault.client_site in ("outside", "vpn") else "outside"
        net = dataclasses.replace(net, router=RouterNet(), client_site=site)  # type: ignore[arg-type]
    return net


def catalog_exports(
    fault: Fault, fix_id: str | None = None, network: Network | None = None
) -> list[Export]:
    """The exports of one fault: each of its fixes (or the one named), per machine it
    touches, with placeholders filled from ``network`` (the lab's; defaults otherwise)."""
    ctx = network_for(fault, network).context()
    fixes: dict[str, Fix] = {}
    for p in fault.placements:
        for fx in p.fixes:
            fixes.setdefault(fx.id, fx)
    if fix_id is not None and fix_id not in fixes:
        raise RdplabError(f"fault {fault.id} has no fix {fix_id!r} (fixes: {', '.join(fixes)})")
    chosen = [fixes[fix_id]] if fix_id else list(fixes.values())
    out = []
    for fx in chosen:
        roles = [r for r in ALL_ROLES if fx.ops.get(r)]
        for role in roles:
            name = f"{fault.id}--{fx.id}" + (f"--{role}" if len(roles) > 1 else "")
            ops = tuple(render_op(o, ctx) for o in fx.ops[role])
            out.append(Export(name, fault.id, fault.title, fx, role, ops, fault.sources))
    return out


def all_exports(network: Network | None = None) -> list[Export]:
    return [e for f in cat.catalog().values() for e in catalog_exports(f, network=network)]


def script(export: Export) -> str:
    """The whole script text: Windows PowerShell 5.1, or for the router a shell script
    for a Linux gateway (``rdplab.export_router``)."""
    if export.role == "router":
        return export_router.script(
            export.filename,
            export.fault,
            export.fix.id,
            export.fix.risk,
            export.fix.summary,
            list(export.ops),
        )
    parts = parts_for_ops([o.name for o in export.ops])
    body = assemble(parts)
    has_keymap = any(p.name == "certificates" for p in parts)
    batch = json.dumps([o.to_json() for o in export.ops], indent=1)
    if "'@" in batch:  # would end the here-string early
        raise RdplabError(f"{export.name}: an op argument contains '@, which cannot be exported")
    return "\n".join(
        [
            _help(export, [p.name for p in parts]),
            "[CmdletBinding(SupportsShouldProcess = $true)]",
            "param(",
            "    [string]$BackupFolder = '',",
            "    [switch]$AllowLowerSecurity",
            ")",
            "",
            f"# == rdplab agent parts: {', '.join(p.name for p in parts)}"
            " (src/rdplab/agent/parts, the same code agent.ps1 runs) ==",
            "",
            body,
            "# == exported fix: the op batch and the runner ==",
            "",
            BATCH_BEGIN,
            "$script:RdplabBatchJson = @'",
            batch,
            "'@",
            BATCH_END,
            "# What -WhatIf and -Confirm say about each op, in the batch's order.",
            "$script:RdplabWhat = @(",
            ",\n".join("    '" + describe(o).replace("'", "''") + "'" for o in export.ops),
            ")",
            "",
            _RUNNER.replace("@FAULT@", export.fault)
            .replace("@FIX@", export.fix.id)
            .replace("@NAME@", export.name)
            .replace("@RISKY@", "$true" if export.fix.risk == "lowers-security" else "$false")
            .replace("@REMEDIATION_DIR@", REMEDIATION_DIR)
            .replace("@SAVE_KEYMAP@", _SAVE_KEYMAP if has_keymap else "# (no key file map)"),
        ]
    )


def read_batch(text: str) -> list[Op]:
    """The op batch an exported script carries, read back out of its text."""
    m = re.search(
        re.escape(BATCH_BEGIN)
        + r"\n\$script:RdplabBatchJson = @'\n(.*?)\n'@\n"
        + re.escape(BATCH_END),
        text,
        re.S,
    )
    if m is None:
        raise RdplabError("not an rdplab remediation script: no op batch in it")
    return [Op(o["op"], o.get("args") or {}) for o in json.loads(m.group(1))]


def risk_of(text: str) -> str:
    """The risk label an exported script's help carries (``rdplab-risk:``)."""
    m = re.search(r"^    rdplab-risk: (\S+)$", text, re.M)
    return m.group(1) if m else "unknown"


def write(exports: Sequence[Export], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for e in exports:
        path = out_dir / e.filename
        if e.role == "router":
            path.write_text(script(e), encoding="utf-8", newline="\n")
            path.chmod(0o755)
        else:  # Windows PowerShell 5.1 reads BOM'd UTF-8
            path.write_text(script(e), encoding="utf-8-sig", newline="\r\n")
        written.append(path)
    return written


def describe(op: Op) -> str:
    """One op for people: registry ops as KEY\\NAME, the other arguments as name=value."""
    args = {k: v for k, v in op.args.items() if k != "pfx"}
    head = op.name
    if op.name.startswith("reg.") and "key" in args:
        target = args.pop("key") + (f"\\{args.pop('name')}" if "name" in args else "")
        head += f" {target}"
    rest = ", ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.items()
    )
    return f"{head} ({rest})" if rest else head


def _help_lines(text: str, indent: str = "    ") -> list[str]:
    return [indent + line for line in text.replace("#>", "# >").splitlines()]


def _help(e: Export, parts: list[str]) -> str:
    risk = e.fix.risk
    lines = [
        "<#",
        ".SYNOPSIS",
        f"    rdplab remediation for {e.fault}: fix {e.fix.id} ({risk}), on the {e.role}.",
        "",
        ".DESCRIPTION",
        *_help_lines(e.fix.summary),
        "",
        f"    Fault: {e.fault} ({e.fault_title})",
        f"    Fix id: {e.fix.id}   Risk: {risk}   Machine: {e.role}   From: {e.origin}",
        f"    Lab version: rdplab {__version__}",
        "",
        "    Every op below is run by the same PowerShell as the rdplab agent (agent parts:",
        f"    {', '.join(parts)}), as ONE batch: each registry key is backed up with",
        "    'reg export' into the backup folder before it changes, a transcript is kept there,",
        "    and on the first failure everything the batch did is rolled back and the script",
        "    exits 1. -WhatIf lists every op and changes nothing. The last output line is JSON:",
        '    {"results": [...], "rolled_back": false}.',
        "",
        "    Ops:",
        *[f"      {describe(o)}" for o in e.ops],
    ]
    if risk == "lowers-security":
        lines += [
            "",
            "    THIS FIX LOWERS SECURITY. The script refuses to run (exit 2) unless you pass",
            "    -AllowLowerSecurity.",
        ]
    lines += [
        "",
        "    Sources:",
        *[f"      - {s}" for s in e.sources],
        "",
        ".PARAMETER BackupFolder",
        "    Where the registry backups (.reg files) and the transcript go. Default:",
        f"    {REMEDIATION_DIR}\\{e.name}-<UTC time>.",
        "",
        ".PARAMETER AllowLowerSecurity",
        "    Needed to run a fix labelled lowers-security; without it such a fix is refused.",
        "",
        ".EXAMPLE",
        f"    .\\{e.filename} -WhatIf",
        "    Lists every change the fix would make; changes nothing.",
        "",
        ".EXAMPLE",
        f"    .\\{e.filename}" + (" -AllowLowerSecurity" if risk == "lowers-security" else ""),
        "    Applies the fix; backups and transcript go to the default folder.",
        "",
        ".NOTES",
        f"    rdplab-fault: {e.fault}",
        f"    rdplab-fix: {e.fix.id}",
        f"    rdplab-risk: {risk}",
        f"    rdplab-version: {__version__}",
        "    Exit codes: 0 done (or -WhatIf), 1 an op failed and the batch was rolled back,",
        "    2 refused (lowers security without -AllowLowerSecurity).",
        "#>",
    ]
    return "\n".join(lines)


# As agent.ps1's main does: the key file map is a cache; failing to save it fails no fix.
_SAVE_KEYMAP = (
    "try { Save-KeyMap } catch {\n"
    "            [Console]::Error.WriteLine('rdplab: could not save the key file map: ' +"
    " (Get-ErrorText $_))\n"
    "        }"
)

_RUNNER = r"""
function Invoke-RdplabRemediation {
    param([System.Management.Automation.PSCmdlet]$Cmdlet, [string]$Folder, [bool]$AllowLower)
    if (@RISKY@ -and -not $AllowLower) {
        [Console]::Error.WriteLine(('rdplab: fix @FIX@ for @FAULT@ lowers security; refused.' +
            ' Run with -AllowLowerSecurity to apply it anyway.'))
        return 2
    }
    $ops = @(ConvertFrom-JsonText $script:RdplabBatchJson)
    $approved = New-Object System.Collections.Generic.List[object]
    for ($i = 0; $i -lt $ops.Count; $i++) {
        $what = $script:RdplabWhat[$i]
        if ($Cmdlet.ShouldProcess($env:COMPUTERNAME, $what)) { $approved.Add($ops[$i]) }
    }
    if ($approved.Count -eq 0) {
        [Console]::Error.WriteLine('rdplab: nothing run, nothing changed (-WhatIf or declined).')
        [Console]::Out.WriteLine('{"results": [], "rolled_back": false}')
        return 0
    }
    if ($Folder -eq '') {
        $culture = [System.Globalization.CultureInfo]::InvariantCulture
        $stamp = [DateTime]::UtcNow.ToString('yyyyMMdd-HHmmss', $culture)
        $Folder = Join-Path '@REMEDIATION_DIR@' ('@NAME@-' + $stamp)
    }
    # Approved: the ops themselves must not ask again (-Confirm lowers $ConfirmPreference for
    # every cmdlet they call); these preferences reach them through PowerShell's scopes.
    $ConfirmPreference = 'None'
    $WhatIfPreference = $false
    $null = New-Item -ItemType Directory -Force -Path $Folder
    $script:BackupDir = $Folder
    $null = Start-Transcript -LiteralPath (Join-Path $Folder 'transcript.txt')
    try {
        $line = 'rdplab: fix @FIX@ for @FAULT@ on {0}: {1} op(s); backups in {2}'
        Write-Host ($line -f $env:COMPUTERNAME, $approved.Count, $Folder)
        Remove-TypeData -TypeName System.Array -ErrorAction SilentlyContinue
        $batch = Invoke-Batch $approved.ToArray()
        @SAVE_KEYMAP@
        foreach ($r in $batch['results']) {
            $state = 'unchanged'
            if ($r['changed']) { $state = 'CHANGED' }
            if ($null -ne $r['error']) { $state = 'FAILED' }
            Write-Host ('  {0,-9} {1}: {2}' -f $state, $r['op'], $r['detail'])
        }
        # straight to stdout: this function's pipeline output is its exit code
        [Console]::Out.WriteLine((ConvertTo-JsonText $batch))
        if ($batch['rolled_back']) {
            [Console]::Error.WriteLine('rdplab: an op failed; everything it did was rolled back.')
            return 1
        }
        return 0
    } finally {
        $null = Stop-Transcript
    }
}

$script:RdplabExit = 1
try {
    $allow = $AllowLowerSecurity.IsPresent
    $script:RdplabExit = [int](@(Invoke-RdplabRemediation $PSCmdlet $BackupFolder $allow)[-1])
} catch {
    [Console]::Error.WriteLine('rdplab: ' + (Get-ErrorText $_))
    $script:RdplabExit = 1
}
exit $script:RdplabExit
"""


def exports_for_scenario(
    scenario_fix_ops: Mapping[Role, tuple[Op, ...]],
    scenario_id: str,
    fix: Fix,
    faults: Sequence[Fault],
    origin: str,
    network: Network,
) -> list[Export]:
    """A lab file scenario's own op fix, one script per machine it touches."""
    ctx = network.context()
    roles = [r for r in ROLES if scenario_fix_ops.get(r)]
    title = ", ".join(f.id for f in faults) or "no fault"
    sources = tuple(dict.fromkeys(s for f in faults for s in f.sources))
    return [
        Export(
            f"{scenario_id}--custom" + (f"--{role}" if len(roles) > 1 else ""),
            title,
            f"the lab file's own fix for scenario {scenario_id}",
            fix,
            role,
            tuple(render_op(o, ctx) for o in scenario_fix_ops[role]),
            sources,
            origin,
        )
        for role in roles
    ]
