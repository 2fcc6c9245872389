<#
.SYNOPSIS
    Put the rdplab agent in place: C:\ProgramData\rdplab\agent.ps1 (Windows PowerShell 5.1).

.DESCRIPTION
    The Vagrantfile's "agent-upload" file provisioner copies src/rdplab/agent/agent.ps1 to
    -Source over WinRM; this script moves it to the path rdplab expects
    (rdplab.agent.AGENT_PATH, docs/agent-protocol.md) and prints its SHA-256, the
    agent_version every agent answer carries. rdplab checks that hash before each lab run
    and re-uploads a stale agent itself, so running this again is harmless.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string] $Source,
    [string] $AgentDir = 'C:\ProgramData\rdplab'
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 2.0

if (-not (Test-Path -LiteralPath $Source -PathType Leaf)) {
    throw "rdplab install-agent: $Source is missing (the agent-upload provisioner did not run?)"
}

$agentPath = Join-Path $AgentDir 'agent.ps1'
$backupDir = Join-Path $AgentDir 'backups'
foreach ($dir in @($AgentDir, $backupDir)) {
    if (-not (Test-Path -LiteralPath $dir)) {
        New-Item -ItemType Directory -Force -Path $dir | Out-Null
    }
}

# Parse it before installing: a broken agent fails here, not in the middle of a lab run.
$tokens = $null
$parseErrors = $null
[System.Management.Automation.Language.Parser]::ParseFile($Source, [ref] $tokens, [ref] $parseErrors) | Out-Null
if ($parseErrors -and $parseErrors.Count -gt 0) {
    $first = $parseErrors[0]
    throw ("rdplab install-agent: {0} does not parse: line {1}: {2}" -f $Source, $first.Extent.StartLineNumber, $first.Message)
}

Copy-Item -LiteralPath $Source -Destination $agentPath -Force
Remove-Item -LiteralPath $Source -Force

$hash = (Get-FileHash -Algorithm SHA256 -LiteralPath $agentPath).Hash
Write-Output ("rdplab agent installed: {0} sha256 {1}" -f $agentPath, $hash)
