# == MSLicensing ==================================================================================

# BEGIN OP TABLE
$script:OpTable['licensing.clear'] = @{ Fn = 'Invoke-OpLicensingClear'; Args = '' }
# END OP TABLE

function Get-MsLicensingProblems {
    # rdplab.mslicensing.problems: [] when healthy or absent ([MS-RDPELE] 2.2.2.3.1: 20-byte HWID).
    $view = Get-RegView @($script:MsLicensingKey)
    $found = New-Object System.Collections.Generic.List[string]
    if (-not $view.Contains($script:MsLicensingKey)) { return , $found.ToArray() }
    $hwidKey = $script:MsLicensingKey + '\HardwareID'
    if (-not $view.Contains($hwidKey)) {
        $found.Add('HardwareID subkey missing')
    } else {
        $hwid = $null
        foreach ($name in $view[$hwidKey]['values'].Keys) {
            if ($name -eq 'ClientHWID') { $hwid = $view[$hwidKey]['values'][$name] }
        }
        if ($null -eq $hwid) {
            $found.Add('HardwareID\ClientHWID missing')
        } elseif ($hwid['type'] -ne 'REG_BINARY') {
            $found.Add(('HardwareID\ClientHWID is {0}, not REG_BINARY' -f $hwid['type']))
        } elseif (([string]$hwid['data']).Length / 2 -ne $script:HwidBytes) {
            $found.Add(('HardwareID\ClientHWID is {0} bytes, not {1}' -f (([string]$hwid['data']).Length / 2), $script:HwidBytes))
        }
    }
    if (-not $view.Contains($script:MsLicensingKey + '\Store')) { $found.Add('Store subkey missing') }
    return , $found.ToArray()
}

function Invoke-OpLicensingClear {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $found = Get-MsLicensingProblems
    if ($found.Length -eq 0) { return New-OpResult 'licensing.clear' $false 'MSLicensing healthy or absent' }
    $backup = Backup-RegKey $script:MsLicensingKey
    Remove-RegKeyTree $script:MsLicensingKey
    return New-OpResult 'licensing.clear' $true ('deleted MSLicensing ({0})' -f ($found -join '; ')) $backup
}
