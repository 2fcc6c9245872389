# An example of a user's own fix script for rdp-disabled (variant policy), run by the lab as
# the scenario's fix on real providers (labs/custom-fixes.yaml, scenario my-script-fix).
# Windows PowerShell 5.1. The lab runs it elevated, in one call, and reads its last output
# line: one JSON object {"results": [{"op", "changed", "detail"}]} saying what it changed, so
# the lab can check that a second run changes nothing (README, "Validate your own fix").
[CmdletBinding(SupportsShouldProcess = $true)]
param()
$ErrorActionPreference = 'Stop'
$policy = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services'
$local = 'HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server'
$results = @()

$current = Get-ItemProperty -LiteralPath $policy -Name fDenyTSConnections -ErrorAction SilentlyContinue
if ($null -ne $current -and $PSCmdlet.ShouldProcess($policy, 'Remove fDenyTSConnections')) {
    Remove-ItemProperty -LiteralPath $policy -Name fDenyTSConnections
    $results += @{ op = 'remove-policy'; changed = $true; detail = 'policy value removed' }
}
$value = (Get-ItemProperty -LiteralPath $local -Name fDenyTSConnections).fDenyTSConnections
if ($value -ne 0 -and $PSCmdlet.ShouldProcess($local, 'Set fDenyTSConnections to 0')) {
    Set-ItemProperty -LiteralPath $local -Name fDenyTSConnections -Value 0 -Type DWord
    $results += @{ op = 'allow-connections'; changed = $true; detail = "fDenyTSConnections: $value -> 0" }
}
ConvertTo-Json -Compress -Depth 4 -InputObject @{ results = @($results) }
