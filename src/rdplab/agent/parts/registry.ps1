# == registry =====================================================================================
# RegistryView.Registry64 keeps a 32-bit PowerShell out of WOW6432Node.
# https://learn.microsoft.com/en-us/dotnet/api/microsoft.win32.registrykey.openbasekey

# BEGIN OP TABLE
$script:OpTable['reg.set'] = @{ Fn = 'Invoke-OpRegSet'; Args = 'key:str name:str type:str data:int|str|list' }
$script:OpTable['reg.delete'] = @{ Fn = 'Invoke-OpRegDelete'; Args = 'key:str name?:str' }
$script:OpTable['reg.restore'] = @{ Fn = 'Invoke-OpRegRestore'; Args = 'backup:str' }
# END OP TABLE
$script:UndoHandlers['reg'] = 'Undo-RegChange'
$script:BackupSeq = 0

function Split-RegPath {
    param([string]$Path)
    $parts = @($Path.Replace('/', '\').Split([char]'\') | Where-Object { $_ -ne '' })
    if ($parts.Count -eq 0) { Stop-Op 'empty registry key path' }
    $hive = $parts[0].ToUpperInvariant()
    if ($hive -eq 'HKEY_LOCAL_MACHINE') { $hive = 'HKLM' }
    if ($hive -eq 'HKEY_CURRENT_USER') { $hive = 'HKCU' }
    if ($hive -ne 'HKLM' -and $hive -ne 'HKCU') {
        Stop-Op ('registry key {0}: hive must be HKLM or HKCU' -f (Format-Repr $Path))
    }
    $sub = (@($parts | Select-Object -Skip 1)) -join '\'
    $info = New-Dict
    $info['Hive'] = $hive
    $info['Sub'] = $sub
    $info['Path'] = (@($hive) + @($parts | Select-Object -Skip 1)) -join '\'
    $info['Long'] = (@(@{ HKLM = 'HKEY_LOCAL_MACHINE'; HKCU = 'HKEY_CURRENT_USER' }[$hive]) + @($parts | Select-Object -Skip 1)) -join '\'
    return $info
}

function Open-RegBase {
    param([string]$Hive)
    $h = [Microsoft.Win32.RegistryHive]::LocalMachine
    if ($Hive -eq 'HKCU') { $h = [Microsoft.Win32.RegistryHive]::CurrentUser }
    return [Microsoft.Win32.RegistryKey]::OpenBaseKey($h, [Microsoft.Win32.RegistryView]::Registry64)
}

function Open-RegKey {
    # The key, or $null when it does not exist.
    param([string]$Path, [bool]$Writable = $false)
    $p = Split-RegPath $Path
    $base = Open-RegBase $p['Hive']
    if ($p['Sub'] -eq '') { return $base }
    return $base.OpenSubKey($p['Sub'], $Writable)
}

function ConvertTo-RegValueJson {
    # One value as {"type", "data"}; RegistryValueKind -> REG_* names.
    # https://learn.microsoft.com/en-us/dotnet/api/microsoft.win32.registryvaluekind
    param([Microsoft.Win32.RegistryKey]$Key, [string]$Name)
    $kind = [string]$Key.GetValueKind($Name)
    # DoNotExpandEnvironmentNames: REG_EXPAND_SZ reads back as stored (%SystemRoot%\...).
    $raw = $Key.GetValue($Name, $null, [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
    $v = New-Dict
    switch ($kind) {
        'String' { $v['type'] = 'REG_SZ'; $v['data'] = [string]$raw }
        'ExpandString' { $v['type'] = 'REG_EXPAND_SZ'; $v['data'] = [string]$raw }
        'DWord' {
            # GetValue returns a signed Int32; the twin holds [0, 2^32).
            $v['type'] = 'REG_DWORD'
            $v['data'] = [System.BitConverter]::ToUInt32([System.BitConverter]::GetBytes([int]$raw), 0)
        }
        'QWord' {
            $v['type'] = 'REG_QWORD'
            $v['data'] = [System.BitConverter]::ToUInt64([System.BitConverter]::GetBytes([long]$raw), 0)
        }
        'MultiString' { $v['type'] = 'REG_MULTI_SZ'; $v['data'] = [object[]]@($raw) }
        'Binary' { $v['type'] = 'REG_BINARY'; $v['data'] = Get-HexString ([byte[]]$raw) }
        default {
            # REG_NONE and the resource types have no twin type: report their bytes.
            $v['type'] = 'REG_NONE'
            if ($raw -is [byte[]]) { $v['data'] = Get-HexString $raw } else { $v['data'] = [string]$raw }
        }
    }
    return $v
}

function Get-RegKeyTree {
    # The key and every key below it: list of {Path, Values, Subkeys}; empty when absent.
    param([string]$Path)
    $out = New-Object System.Collections.Generic.List[object]
    $p = Split-RegPath $Path
    $key = Open-RegKey $p['Path']
    if ($null -eq $key) { return , $out }
    try { Add-RegKeyNode $key $p['Path'] $out } finally { $key.Close() }
    return , $out
}

function Add-RegKeyNode {
    param([Microsoft.Win32.RegistryKey]$Key, [string]$Path, $Out)
    $values = New-Dict
    foreach ($name in $Key.GetValueNames()) { $values[$name] = ConvertTo-RegValueJson $Key $name }
    $subkeys = Get-SortedByLower ([string[]]$Key.GetSubKeyNames())
    $node = New-Dict
    $node['Path'] = $Path
    $node['Values'] = $values
    $node['Subkeys'] = [object[]]$subkeys
    $Out.Add($node)
    foreach ($s in $subkeys) {
        $child = $null
        try { $child = $Key.OpenSubKey($s, $false) } catch { $child = $null }  # unreadable: skipped
        if ($null -ne $child) {
            try { Add-RegKeyNode $child ($Path + '\' + $s) $Out } finally { $child.Close() }
        }
    }
}

function Get-RegSnapshot {
    # Canonical text of a key tree (values with types), for "already as backed up" checks.
    # Each line: the key's relative path, US, a JSON list of {name, type, data}. Names travel as
    # values, never as property names: a key's default value has the empty name, and Windows
    # PowerShell 5.1's ConvertFrom-Json cannot make a property with an empty name.
    param([string]$Path)
    $nodes = Get-RegKeyTree $Path
    if ($nodes.Count -eq 0) { return '' }
    $root = (Split-RegPath $Path)['Path']
    $lines = New-Object System.Collections.Generic.List[string]
    foreach ($n in $nodes) {
        $rel = $n['Path'].Substring($root.Length).ToLowerInvariant()
        $names = Get-SortedByLower ([string[]]@($n['Values'].Keys))
        $vals = New-Object System.Collections.Generic.List[object]
        foreach ($name in $names) {
            $entry = New-Dict
            $entry['name'] = $name.ToLowerInvariant()
            $entry['type'] = $n['Values'][$name]['type']
            $entry['data'] = $n['Values'][$name]['data']
            $vals.Add($entry)
        }
        $lines.Add($rel + [char]31 + (ConvertTo-JsonText ([object[]]$vals.ToArray())))
    }
    $sorted = $lines.ToArray()
    [System.Array]::Sort($sorted, [System.StringComparer]::Ordinal)
    return ($sorted -join "`n")
}

function Get-RegValue {
    # {"type", "data"} of one value, or $null.
    param([string]$Path, [string]$Name)
    $key = Open-RegKey $Path
    if ($null -eq $key) { return $null }
    try {
        if (@($key.GetValueNames()) -notcontains $Name) { return $null }
        return ConvertTo-RegValueJson $key $Name
    } finally { $key.Close() }
}

function ConvertTo-RegData {
    # The twin's check_value: validate data for its type, return the stored form.
    param([string]$Type, $Data, [string]$Where)
    if ($script:RegTypes -cnotcontains $Type) { Stop-Op ('{0}: unknown registry type {1}' -f $Where, (Format-Repr $Type)) }
    if ($Type -eq 'REG_DWORD' -or $Type -eq 'REG_QWORD') {
        $limit = [decimal]4294967296
        if ($Type -eq 'REG_QWORD') { $limit = [decimal]::Parse('18446744073709551616') }
        if (-not (Test-Integer $Data) -or [decimal]$Data -lt 0 -or [decimal]$Data -ge $limit) {
            Stop-Op ('{0}: {1} needs an integer in [0, {2})' -f $Where, $Type, $limit)
        }
        if ($Type -eq 'REG_DWORD') { return [uint32]$Data }
        return [uint64]$Data
    }
    if ($Type -eq 'REG_SZ' -or $Type -eq 'REG_EXPAND_SZ') {
        if ($Data -isnot [string]) { Stop-Op ('{0}: {1} needs a string' -f $Where, $Type) }
        return $Data
    }
    if ($Type -eq 'REG_MULTI_SZ') {
        $ok = $Data -is [System.Collections.IList]
        if ($ok) { foreach ($s in $Data) { if ($s -isnot [string]) { $ok = $false } } }
        if (-not $ok) { Stop-Op ('{0}: REG_MULTI_SZ needs a list of strings' -f $Where) }
        return , [object[]]@($Data)
    }
    if ($Data -isnot [string]) { Stop-Op ('{0}: REG_BINARY needs a hex string' -f $Where) }
    $bytes = ConvertFrom-HexString $Data
    if ($null -eq $bytes) { Stop-Op ('{0}: REG_BINARY data is not hex' -f $Where) }
    return Get-HexString $bytes
}

function Test-RegValueEqual {
    param($Current, [string]$Type, $Stored)
    if ($null -eq $Current -or $Current['type'] -cne $Type) { return $false }
    $data = $Current['data']
    if ($Type -eq 'REG_MULTI_SZ') {
        $a = @($data)
        $b = @($Stored)
        if ($a.Count -ne $b.Count) { return $false }
        for ($i = 0; $i -lt $a.Count; $i++) { if ($a[$i] -cne $b[$i]) { return $false } }
        return $true
    }
    if ($Type -eq 'REG_DWORD' -or $Type -eq 'REG_QWORD') { return ([decimal]$data -eq [decimal]$Stored) }
    return ($data -ceq $Stored)
}

function Set-RegValue {
    param([string]$Path, [string]$Name, [string]$Type, $Stored)
    $p = Split-RegPath $Path
    $base = Open-RegBase $p['Hive']
    $key = $base.CreateSubKey($p['Sub'])  # creates missing parents, writable
    try {
        switch ($Type) {
            'REG_SZ' { $key.SetValue($Name, [string]$Stored, [Microsoft.Win32.RegistryValueKind]::String) }
            'REG_EXPAND_SZ' { $key.SetValue($Name, [string]$Stored, [Microsoft.Win32.RegistryValueKind]::ExpandString) }
            'REG_DWORD' {
                $bits = [System.BitConverter]::ToInt32([System.BitConverter]::GetBytes([uint32]$Stored), 0)
                $key.SetValue($Name, $bits, [Microsoft.Win32.RegistryValueKind]::DWord)
            }
            'REG_QWORD' {
                $bits = [System.BitConverter]::ToInt64([System.BitConverter]::GetBytes([uint64]$Stored), 0)
                $key.SetValue($Name, $bits, [Microsoft.Win32.RegistryValueKind]::QWord)
            }
            'REG_MULTI_SZ' { $key.SetValue($Name, [string[]]@($Stored), [Microsoft.Win32.RegistryValueKind]::MultiString) }
            'REG_BINARY' { $key.SetValue($Name, [byte[]](ConvertFrom-HexString $Stored), [Microsoft.Win32.RegistryValueKind]::Binary) }
        }
    } finally { $key.Close() }
}

function Remove-RegKeyTree {
    param([string]$Path)
    $p = Split-RegPath $Path
    $cut = $p['Sub'].LastIndexOf('\')
    $parentSub = ''
    $leaf = $p['Sub']
    if ($cut -ge 0) {
        $parentSub = $p['Sub'].Substring(0, $cut)
        $leaf = $p['Sub'].Substring($cut + 1)
    }
    $base = Open-RegBase $p['Hive']
    $parent = $base
    if ($parentSub -ne '') { $parent = $base.OpenSubKey($parentSub, $true) }
    if ($null -eq $parent) { return }
    try { $parent.DeleteSubKeyTree($leaf, $false) } finally { $parent.Close() }
}

function Backup-RegKey {
    # reg export of the key before any change (the file a person can read or import); a key that
    # does not exist yet is backed up as a .reg that deletes it ("[-KEY]"). A sidecar .json
    # holds what a restore compares and puts back: with -Name, that one value as it was (scope
    # "value"; other values of the key, such as the ones Windows writes at run time, are left
    # alone); without, the whole tree (scope "tree", for a key deletion).
    # https://learn.microsoft.com/en-us/windows-server/administration/windows-commands/reg-export
    # https://learn.microsoft.com/en-us/troubleshoot/windows-server/performance/add-modify-delete-registry-subkeys-values
    param([string]$Key, $Name = $null)
    $p = Split-RegPath $Key
    if (-not (Test-Path -LiteralPath $script:BackupDir)) {
        $null = New-Item -ItemType Directory -Force -Path $script:BackupDir
    }
    $script:BackupSeq++
    $stamp = [DateTime]::UtcNow.ToString('yyyyMMdd-HHmmss-fff', [System.Globalization.CultureInfo]::InvariantCulture)
    $safe = $p['Path'] -replace '[^A-Za-z0-9_.-]+', '_'
    if ($safe.Length -gt 80) { $safe = $safe.Substring($safe.Length - 80) }
    $file = Join-Path $script:BackupDir ('{0}-{1}-{2}-{3}.reg' -f $stamp, $PID, $script:BackupSeq, $safe)
    $snapshot = Get-RegSnapshot $p['Path']
    if ($snapshot -ne '') {
        $r = Invoke-Native 'reg.exe' @('export', $p['Path'], $file, '/y', '/reg:64')
        if ($r['ExitCode'] -ne 0) { Stop-Op ('reg export {0} failed (exit {1}): {2}' -f $p['Path'], $r['ExitCode'], $r['Output']) }
    } else {
        $text = "Windows Registry Editor Version 5.00`r`n`r`n[-" + $p['Long'] + "]`r`n"
        [System.IO.File]::WriteAllText($file, $text, [System.Text.Encoding]::Unicode)
    }
    $side = New-Dict
    $side['key'] = $p['Path']
    if ($null -ne $Name) {
        $side['scope'] = 'value'
        $side['name'] = [string]$Name
        $side['value'] = Get-RegValue $p['Path'] ([string]$Name)
        $side['absent_from'] = Get-RegAbsentFrom $p['Path']
    } else {
        $side['scope'] = 'tree'
        $side['snapshot'] = $snapshot
    }
    [System.IO.File]::WriteAllText($file + '.json', (ConvertTo-JsonText $side), (New-Object System.Text.UTF8Encoding $false))
    $undo = New-Dict
    $undo['Kind'] = 'reg'
    $undo['Backup'] = $file
    Add-Undo $undo
    return $file
}

function Read-RegBackup {
    # The sidecar of a backup; one written before scopes existed is a tree backup.
    param([string]$File)
    $side = ConvertFrom-JsonText ([System.IO.File]::ReadAllText($File + '.json'))
    if (-not $side.Contains('scope')) { $side['scope'] = 'tree' }
    return $side
}

function Get-RegAbsentFrom {
    # The topmost key of the path that does not exist yet ($null: the key exists), so a restore
    # can remove the keys a value change had to create.
    param([string]$Path)
    $p = Split-RegPath $Path
    $sub = ''
    foreach ($part in @($p['Sub'].Split([char]'\') | Where-Object { $_ -ne '' })) {
        if ($sub -eq '') { $sub = $part } else { $sub = $sub + '\' + $part }
        $k = Open-RegKey ($p['Hive'] + '\' + $sub)
        if ($null -eq $k) { return ($p['Hive'] + '\' + $sub) }
        $k.Close()
    }
    return $null
}

function Test-RegLeftover {
    # Keys a value change created that now hold no value at all (a restore removes them).
    param([System.Collections.IDictionary]$Side)
    if (-not $Side.Contains('absent_from') -or $null -eq $Side['absent_from']) { return $false }
    $nodes = Get-RegKeyTree ([string]$Side['absent_from'])
    if ($nodes.Count -eq 0) { return $false }
    foreach ($n in $nodes) { if ($n['Values'].Count -gt 0) { return $false } }
    return $true
}

function Test-RegBackupCurrent {
    # Whether what the backup covers is as it was backed up (nothing to restore).
    param([System.Collections.IDictionary]$Side)
    if ($Side['scope'] -eq 'value') {
        $now = Get-RegValue ([string]$Side['key']) ([string]$Side['name'])
        $want = $Side['value']
        $same = $false
        if ($null -eq $want) { $same = ($null -eq $now) } else { $same = (Test-RegValueEqual $now ([string]$want['type']) $want['data']) }
        return ($same -and -not (Test-RegLeftover $Side))
    }
    return ((Get-RegSnapshot ([string]$Side['key'])) -ceq [string]$Side['snapshot'])
}

function Get-RegSnapshotNames {
    # Lower-case value names of one snapshot line's JSON: a list of {name, ...}, or (snapshots
    # of older agents) an object keyed by name.
    param($Parsed)
    $names = New-Object System.Collections.Generic.List[string]
    if ($Parsed -is [System.Collections.IDictionary]) {
        foreach ($k in $Parsed.Keys) { $names.Add(([string]$k).ToLowerInvariant()) }
    } else {
        foreach ($e in @($Parsed)) { if ($null -ne $e) { $names.Add(([string]$e['name']).ToLowerInvariant()) } }
    }
    return , $names
}

function Restore-RegBackup {
    # Put back what the backup covers; $true when something changed. A value backup sets or
    # deletes that one value. A tree backup puts the tree back exactly: reg import merges, so
    # keys and values made since the backup are deleted first.
    # https://learn.microsoft.com/en-us/windows-server/administration/windows-commands/reg-import
    param([string]$File)
    $side = Read-RegBackup $File
    $key = [string]$side['key']
    if (Test-RegBackupCurrent $side) { return $false }
    if ($side['scope'] -eq 'value') {
        $name = [string]$side['name']
        $want = $side['value']
        if ($null -eq $want) {
            $k = Open-RegKey $key $true
            if ($null -ne $k) { try { $k.DeleteValue($name, $false) } finally { $k.Close() } }
        } else {
            $type = [string]$want['type']
            if ($script:RegTypes -cnotcontains $type) { Stop-Op ('reg.restore: {0}\{1} was {2}; import {3} by hand' -f $key, $name, $type, $File) }
            Set-RegValue $key $name $type (ConvertTo-RegData $type $want['data'] ($key + '\' + $name))
        }
        if (Test-RegLeftover $side) { Remove-RegKeyTree ([string]$side['absent_from']) }
        if (-not (Test-RegBackupCurrent $side)) { Stop-Op ('reg.restore: {0}\{1} still differs from {2}' -f $key, $name, $File) }
        return $true
    }
    $want = [string]$side['snapshot']
    if ($want -eq '') {
        Remove-RegKeyTree $key
    } else {
        $root = (Split-RegPath $key)['Path']
        $saved = @{}
        foreach ($line in $want.Split([char]"`n")) {
            $cut = $line.IndexOf([char]31)
            $saved[$line.Substring(0, $cut)] = Get-RegSnapshotNames (ConvertFrom-JsonText $line.Substring($cut + 1))
        }
        foreach ($n in (Get-RegKeyTree $key)) {
            $rel = $n['Path'].Substring($root.Length).ToLowerInvariant()
            if (-not $saved.ContainsKey($rel)) { Remove-RegKeyTree $n['Path']; continue }
            $k = Open-RegKey $n['Path'] $true
            if ($null -eq $k) { continue }
            try {
                foreach ($name in @($n['Values'].Keys)) {
                    if (-not $saved[$rel].Contains($name.ToLowerInvariant())) { $k.DeleteValue($name, $false) }
                }
            } finally { $k.Close() }
        }
        $r = Invoke-Native 'reg.exe' @('import', $File, '/reg:64')
        if ($r['ExitCode'] -ne 0) { Stop-Op ('reg import {0} failed (exit {1}): {2}' -f $File, $r['ExitCode'], $r['Output']) }
    }
    if ((Get-RegSnapshot $key) -cne $want) { Stop-Op ('reg.restore: {0} still differs from {1} after the import' -f $key, $File) }
    return $true
}

function Get-RegView {
    # registry_view: every key of each tree -> {"values", "subkeys"}.
    param([string[]]$Keys)
    $view = New-Object System.Collections.Specialized.OrderedDictionary ([System.StringComparer]::OrdinalIgnoreCase)
    foreach ($k in $Keys) {
        foreach ($n in (Get-RegKeyTree $k)) {
            if ($view.Contains($n['Path'])) { continue }
            $body = New-Dict
            $body['values'] = $n['Values']
            $body['subkeys'] = $n['Subkeys']
            $view[$n['Path']] = $body
        }
    }
    return $view
}

function Undo-RegChange {
    # Undo kind 'reg': put the key back as the batch's backup holds it.
    param([System.Collections.IDictionary]$U)
    $null = Restore-RegBackup $U['Backup']
}

# Ops take the op's arguments and whether an earlier op of the batch changed something, and
# return the result (op, changed, detail, backup, error). Errors throw (Stop-Op).

function Invoke-OpRegSet {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $key = [string]$A['key']
    $name = [string]$A['name']
    $where = (Split-RegPath $key)['Path'] + '\' + $name
    $stored = ConvertTo-RegData ([string]$A['type']) $A['data'] $where
    $before = Get-RegValue $key $name
    if (Test-RegValueEqual $before ([string]$A['type']) $stored) {
        return New-OpResult 'reg.set' $false ('{0}\{1} already {2}' -f $key, $name, (Format-Repr $A['data']))
    }
    $backup = Backup-RegKey $key $name
    Set-RegValue $key $name ([string]$A['type']) $stored
    $was = 'absent'
    if ($null -ne $before) { $was = Format-Repr $before['data'] }
    return New-OpResult 'reg.set' $true ('{0}\{1}: {2} -> {3}' -f $key, $name, $was, (Format-Repr $A['data'])) $backup
}

function Invoke-OpRegDelete {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $key = [string]$A['key']
    $hasName = $A.Contains('name') -and $null -ne $A['name']
    $p = Split-RegPath $key
    if ($hasName) {
        $name = [string]$A['name']
        $shown = $name
        if ($name -eq '') { $shown = '(Default)' }
        $target = $key + '\' + $shown
        $present = $null -ne (Get-RegValue $key $name)
    } else {
        $target = $key
        $present = (Get-RegKeyTree $key).Count -gt 0
        # Safety: never a hive's first level (HKLM\SOFTWARE, HKLM\SYSTEM, ...).
        if ($present -and $p['Sub'].Split('\').Length -lt 2) { Stop-Op ('reg.delete: refusing to delete {0}' -f $p['Path']) }
    }
    if (-not $present) { return New-OpResult 'reg.delete' $false ('{0} already absent' -f $target) }
    if ($hasName) { $backup = Backup-RegKey $key ([string]$A['name']) } else { $backup = Backup-RegKey $key }
    if ($hasName) {
        $k = Open-RegKey $key $true
        try { $k.DeleteValue([string]$A['name'], $true) } finally { $k.Close() }
    } else {
        Remove-RegKeyTree $key
    }
    return New-OpResult 'reg.delete' $true ('deleted {0}' -f $target) $backup
}

function Invoke-OpRegRestore {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $file = [string]$A['backup']
    $full = ''
    try { $full = [System.IO.Path]::GetFullPath($file) } catch { $full = '' }
    $inside = $full.StartsWith($script:BackupDir + '\', [System.StringComparison]::OrdinalIgnoreCase)
    if (-not $inside -or -not (Test-Path -LiteralPath $full) -or -not (Test-Path -LiteralPath ($full + '.json'))) {
        Stop-Op ('reg.restore: no backup {0} on {1}' -f (Format-Repr $file), $env:COMPUTERNAME)
    }
    $side = Read-RegBackup $full
    $key = [string]$side['key']
    $shown = $key
    if ($side['scope'] -eq 'value') { $shown = $key + '\' + [string]$side['name'] }
    if (Test-RegBackupCurrent $side) {
        return New-OpResult 'reg.restore' $false ('{0} already as backed up' -f $shown)
    }
    # Back up the current state of what the backup covers first, so a failing batch can put it back.
    if ($side['scope'] -eq 'value') { $null = Backup-RegKey $key ([string]$side['name']) } else { $null = Backup-RegKey $key }
    $null = Restore-RegBackup $full
    return New-OpResult 'reg.restore' $true ('restored {0} from {1}' -f $key, $file)
}
