# == DNS and hosts ================================================================================
# https://learn.microsoft.com/en-us/powershell/module/dnsclient/get-dnsclientcache

# BEGIN OP TABLE
$script:OpTable['dns.flush'] = @{ Fn = 'Invoke-OpDnsFlush'; Args = 'name:str expect:str' }
$script:OpTable['dns.cache.seed'] = @{ Fn = 'Invoke-OpDnsCacheSeed'; Args = 'name:str address:str' }
$script:OpTable['hosts.set'] = @{ Fn = 'Invoke-OpHostsSet'; Args = 'name:str address:str' }
$script:OpTable['hosts.remove'] = @{ Fn = 'Invoke-OpHostsRemove'; Args = 'name:str' }
# END OP TABLE

function Read-HostsLines {
    if (-not (Test-Path -LiteralPath $script:HostsPath)) { return , (New-Object string[] 0) }
    return , [string[]][System.IO.File]::ReadAllLines($script:HostsPath, [System.Text.Encoding]::Default)
}

function Write-HostsLines {
    param([string[]]$Lines)
    $text = ''
    if ($Lines.Length -gt 0) { $text = ($Lines -join "`r`n") + "`r`n" }
    [System.IO.File]::WriteAllText($script:HostsPath, $text, [System.Text.Encoding]::Default)
}

function Get-HostsMap {
    # lower name -> address; the first entry for a name is the one Windows uses.
    $map = New-Dict
    foreach ($line in (Read-HostsLines)) {
        $body = $line
        $hash = $body.IndexOf('#')
        if ($hash -ge 0) { $body = $body.Substring(0, $hash) }
        $fields = @($body.Split([char[]]@(' ', "`t"), [System.StringSplitOptions]::RemoveEmptyEntries))
        for ($i = 1; $i -lt $fields.Count; $i++) {
            $name = $fields[$i].ToLowerInvariant()
            if (-not $map.Contains($name)) { $map[$name] = $fields[0] }
        }
    }
    return $map
}

function Remove-HostsName {
    # The hosts lines without any mapping for name (other names on a line stay).
    param([string[]]$Lines, [string]$Name)
    $out = New-Object System.Collections.Generic.List[string]
    foreach ($line in $Lines) {
        $body = $line
        $comment = ''
        $hash = $body.IndexOf('#')
        if ($hash -ge 0) { $comment = $body.Substring($hash); $body = $body.Substring(0, $hash) }
        $fields = @($body.Split([char[]]@(' ', "`t"), [System.StringSplitOptions]::RemoveEmptyEntries))
        if ($fields.Count -lt 2 -or -not (@($fields | Select-Object -Skip 1) -contains $Name)) { $out.Add($line); continue }
        $kept = @($fields | Select-Object -Skip 1 | Where-Object { $_ -ne $Name })
        if ($kept.Count -gt 0) {
            $rebuilt = $fields[0] + "`t" + ($kept -join ' ')
            if ($comment -ne '') { $rebuilt += ' ' + $comment }
            $out.Add($rebuilt)
        }
    }
    return , $out.ToArray()
}

function Add-HostsUndo {
    $undo = New-Dict
    $undo['Kind'] = 'file'
    $undo['Path'] = $script:HostsPath
    $undo['Bytes'] = $null
    if (Test-Path -LiteralPath $script:HostsPath) { $undo['Bytes'] = [System.IO.File]::ReadAllBytes($script:HostsPath) }
    Add-Undo $undo
}

function Get-DnsCacheMap {
    # lower name -> address of successful A (else AAAA) answers. Entries that come from the hosts
    # file are left out: the twin keeps hosts and cache apart.
    $hosts = Get-HostsMap
    $map = New-Dict
    $entries = @(Get-DnsClientCache -ErrorAction SilentlyContinue)
    foreach ($type in @(1, 28)) {
        foreach ($e in $entries) {
            if ([int]$e.Type -ne $type -or [int]$e.Status -ne 0) { continue }
            $name = ([string]$e.Entry).ToLowerInvariant()
            if ($hosts.Contains($name) -or $map.Contains($name)) { continue }
            $map[$name] = [string]$e.Data
        }
    }
    return $map
}

function Invoke-OpDnsFlush {
    # https://learn.microsoft.com/en-us/powershell/module/dnsclient/clear-dnsclientcache
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $cache = Get-DnsCacheMap
    $name = ([string]$A['name']).ToLowerInvariant()
    if (-not $cache.Contains($name) -or $cache[$name] -eq [string]$A['expect']) {
        return New-OpResult 'dns.flush' $false 'no stale entry'
    }
    Clear-DnsClientCache -ErrorAction Stop
    return New-OpResult 'dns.flush' $true 'cache flushed'
}

function Invoke-OpDnsCacheSeed {
    # The Windows DNS client has no API to plant a cache entry (ops.py: twin only).
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    Stop-Op ('dns.cache.seed: the Windows DNS client cache cannot be seeded ({0} -> {1}); use hosts.set' -f $A['name'], $A['address'])
}

function Invoke-OpHostsSet {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $name = ([string]$A['name']).ToLowerInvariant()
    $address = [string]$A['address']
    $detail = 'hosts {0} -> {1}' -f $A['name'], $address
    $current = Get-HostsMap
    if ($current.Contains($name) -and $current[$name] -ceq $address) { return New-OpResult 'hosts.set' $false $detail }
    Add-HostsUndo
    $lines = New-Object System.Collections.Generic.List[string]
    foreach ($l in (Remove-HostsName (Read-HostsLines) $name)) { $lines.Add($l) }
    $lines.Add($address + "`t" + $name)
    Write-HostsLines $lines.ToArray()
    return New-OpResult 'hosts.set' $true $detail
}

function Invoke-OpHostsRemove {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $name = ([string]$A['name']).ToLowerInvariant()
    if (-not (Get-HostsMap).Contains($name)) { return New-OpResult 'hosts.remove' $false 'no entry' }
    Add-HostsUndo
    Write-HostsLines (Remove-HostsName (Read-HostsLines) $name)
    return New-OpResult 'hosts.remove' $true ('hosts entry for {0} removed' -f $A['name'])
}
