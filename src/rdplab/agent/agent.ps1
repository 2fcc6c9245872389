# rdplab agent: the Windows side of the op vocabulary and the facts gathering.
#
# Windows PowerShell 5.1. Reads ONE JSON request on stdin (UTF-8) and writes ONE JSON document
# on stdout (UTF-8, no BOM). Exit codes: 0 ok, 1 an op failed and the batch was rolled back
# (or the request could not be carried out), 2 the request is unreadable (stderr only).
# Contract: docs/agent-protocol.md. Reference semantics: src/rdplab/twin/machine.py.
# Review notes (what is proven where): docs/agent-review.md.
#
# ASSEMBLED FILE, do not edit: src/rdplab/agent/parts/*.ps1 joined in the order that
# src/rdplab/agent/assemble.py declares. Edit the parts, then run
# `python -m rdplab.agent.assemble` (tests/unit/test_agent_assemble.py fails until you do).

# == common: strict mode, constants, op and undo tables, general helpers =========================

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
# Nothing may reach stdout but the answer: silence the host streams powershell.exe prints there.
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$VerbosePreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
Add-Type -AssemblyName System.ServiceProcess

# -- constants (mirror src/rdplab/windows.py and src/rdplab/agent/__init__.py) -------------------
$script:Protocol = 1
$script:AgentDir = 'C:\ProgramData\rdplab'
$script:BackupDir = 'C:\ProgramData\rdplab\backups'
$script:KeyMapPath = 'C:\ProgramData\rdplab\keyfiles.json'
$script:TsKey = 'HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server'
$script:RdpTcpKey = 'HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp'
$script:MsLicensingKey = 'HKLM\SOFTWARE\Microsoft\MSLicensing'
$script:WatchedKeys = @(
    'HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server',
    'HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp',
    'HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services',
    'HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\Client',
    'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System\CredSSP\Parameters',
    'HKLM\SOFTWARE\Microsoft\MSLicensing',
    'HKLM\SOFTWARE\Microsoft\MSLicensing\HardwareID',
    'HKLM\SOFTWARE\Microsoft\MSLicensing\Store'
)
$script:WatchedServices = @('TermService', 'SessionEnv', 'UmRdpService', 'Dnscache')
$script:RdGroups = @('Remote Desktop', 'Remote Desktop (WebSocket)')
# The groups by resource id (the rules' Group property), which no display language changes;
# DisplayGroup is the translated name. -28752: Microsoft Learn, "Enable or disable a firewall
# rule on an Azure VM guest OS" (EmbedCtxt of RemoteDesktop-UserMode-In-TCP). -28782: a
# FirewallRules registry export (RemoteDesktop-In-TCP-WS/-WSS), no Microsoft page found.
$script:RdGroupIds = [ordered]@{
    '@FirewallAPI.dll,-28752' = 'Remote Desktop'
    '@FirewallAPI.dll,-28782' = 'Remote Desktop (WebSocket)'
}
$script:DefaultRdpPort = 3389
$script:WebSocketPorts = @(3387, 3392)
$script:CertStores = @('Remote Desktop', 'My')
$script:HwidBytes = 20
$script:RegTypes = @('REG_SZ', 'REG_EXPAND_SZ', 'REG_DWORD', 'REG_QWORD', 'REG_MULTI_SZ', 'REG_BINARY')
$script:StartTypes = @('Automatic', 'Manual', 'Disabled')
$script:RuleFields = @('name', 'display_name', 'group', 'direction', 'action', 'protocol',
    'local_port', 'remote_port', 'program', 'profiles', 'enabled', 'store', 'remote_address')
$script:AddressKeywords = @('LocalSubnet', 'DNS', 'DHCP', 'WINS', 'DefaultGateway', 'Internet', 'Intranet',
    'IntranetRemoteAccess', 'PlayToDevice', 'CaptivePortal')
$script:MatchKeys = @('name', 'group', 'direction', 'action', 'protocol', 'local_port', 'remote_port')
$script:HostsPath = Join-Path $env:SystemRoot 'System32\drivers\etc\hosts'

# Op table (op name -> function and arguments, name:kind, "?" = optional) and undo handlers
# (undo kind -> function): each part registers its own, so an assembly of some parts knows
# only the ops it carries.
$script:OpTable = [ordered]@{}
$script:UndoHandlers = @{}
$script:UndoHandlers['file'] = 'Undo-FileBytes'

# Per-batch state: what to undo on failure, in order.
$script:Undo = New-Object System.Collections.Generic.List[object]

# == general helpers ==============================================================================

function Stop-Op {
    # An op error in the twin's words: the message becomes the result's "error".
    param([string]$Message)
    $ex = New-Object System.InvalidOperationException $Message
    $ex.Data['rdplab'] = $true
    throw $ex
}

function Get-ErrorText {
    param($ErrorRecord)
    $ex = $ErrorRecord.Exception
    if ($null -ne $ex -and $ex.Data.Contains('rdplab')) { return $ex.Message }
    while ($ex -is [System.Management.Automation.MethodInvocationException] -and $null -ne $ex.InnerException) {
        $ex = $ex.InnerException
        if ($ex.Data.Contains('rdplab')) { return $ex.Message }
    }
    if ($null -eq $ex) { return [string]$ErrorRecord }
    return ('{0}: {1}' -f $ex.GetType().Name, $ex.Message)
}

function Test-ErrorHResult {
    # Whether the error, or an exception inside it, carries this HResult: a language-independent
    # test, where the message is translated.
    # https://learn.microsoft.com/en-us/dotnet/api/system.exception.hresult
    param($ErrorRecord, [int]$HResult)
    $ex = $ErrorRecord.Exception
    while ($null -ne $ex) {
        if ($ex.HResult -eq $HResult) { return $true }
        $ex = $ex.InnerException
    }
    return $false
}

function New-Dict {
    # Case-sensitive ordered dictionary: JSON keys are case-sensitive, as in Python.
    return New-Object System.Collections.Specialized.OrderedDictionary ([System.StringComparer]::Ordinal)
}

function Test-Integer {
    param($Value)
    if ($null -eq $Value -or $Value -is [bool]) { return $false }
    if ($Value -is [int] -or $Value -is [long] -or $Value -is [uint64] -or $Value -is [uint32]) { return $true }
    if ($Value -is [decimal]) { return ([decimal]::Truncate($Value) -eq $Value) }
    if ($Value -is [double]) { return ([Math]::Truncate($Value) -eq $Value -and [Math]::Abs($Value) -lt 1e20) }
    return $false
}

function Get-PyTypeName {
    param($Value)
    if ($null -eq $Value) { return 'NoneType' }
    if ($Value -is [bool]) { return 'bool' }
    if (Test-Integer $Value) { return 'int' }
    if ($Value -is [string]) { return 'str' }
    if ($Value -is [System.Collections.IDictionary]) { return 'dict' }
    if ($Value -is [System.Collections.IList]) { return 'list' }
    if ($Value -is [decimal] -or $Value -is [double]) { return 'float' }
    return $Value.GetType().Name
}

function Format-Repr {
    # Python's repr() for the JSON values op details quote (strings, numbers, lists, dicts).
    param($Value)
    if ($null -eq $Value) { return 'None' }
    if ($Value -is [bool]) {
        if ($Value) { return 'True' }
        return 'False'
    }
    if ($Value -is [string]) {
        if ($Value.Contains("'") -and -not $Value.Contains('"')) { return '"' + $Value.Replace('\', '\\') + '"' }
        return "'" + $Value.Replace('\', '\\').Replace("'", "\'") + "'"
    }
    if ($Value -is [System.Collections.IDictionary]) {
        $parts = New-Object System.Collections.Generic.List[string]
        foreach ($k in $Value.Keys) { $parts.Add((Format-Repr $k) + ': ' + (Format-Repr $Value[$k])) }
        return '{' + ($parts -join ', ') + '}'
    }
    if ($Value -is [System.Collections.IList]) {
        $parts = New-Object System.Collections.Generic.List[string]
        foreach ($v in $Value) { $parts.Add((Format-Repr $v)) }
        return '[' + ($parts -join ', ') + ']'
    }
    return [string]$Value
}

function ConvertTo-PlainData {
    # ConvertFrom-Json (5.1) gives PSCustomObject: turn it into dictionaries and object[].
    param($InputObject)
    if ($null -eq $InputObject) { return $null }
    if ($InputObject -is [System.Management.Automation.PSCustomObject]) {
        $d = New-Dict
        foreach ($p in $InputObject.PSObject.Properties) { $d[$p.Name] = ConvertTo-PlainData $p.Value }
        return $d
    }
    if ($InputObject -is [System.Collections.IDictionary]) {
        $d = New-Dict
        foreach ($k in $InputObject.Keys) { $d[[string]$k] = ConvertTo-PlainData $InputObject[$k] }
        return $d
    }
    if ($InputObject -is [System.Collections.IList]) {
        $list = New-Object System.Collections.Generic.List[object]
        foreach ($e in $InputObject) { $list.Add((ConvertTo-PlainData $e)) }
        return , $list.ToArray()
    }
    return $InputObject
}

function ConvertTo-JsonText {
    # -Depth: the 5.1 default of 2 would flatten the facts document.
    # https://learn.microsoft.com/en-us/powershell/module/microsoft.powershell.utility/convertto-json?view=powershell-5.1
    param($InputObject)
    return (ConvertTo-Json -InputObject $InputObject -Depth 20 -Compress)
}

function ConvertFrom-JsonText {
    param([string]$Text)
    return ConvertTo-PlainData (ConvertFrom-Json -InputObject $Text)
}

function Get-Arg {
    param([System.Collections.IDictionary]$A, [string]$Name)
    if ($A.Contains($Name)) { return $A[$Name] }
    return $null
}

function New-OpResult {
    param([string]$Op, [bool]$Changed, [string]$Detail, $Backup = $null)
    $r = New-Dict
    $r['op'] = $Op
    $r['changed'] = $Changed
    $r['detail'] = $Detail
    $r['backup'] = $Backup
    $r['error'] = $null
    return $r
}

function Add-Undo {
    param([System.Collections.IDictionary]$Entry)
    $script:Undo.Add($Entry)
}

function Undo-FileBytes {
    # Undo kind 'file': write the saved bytes back, or delete a file that did not exist.
    param([System.Collections.IDictionary]$U)
    if ($null -eq $U['Bytes']) {
        Remove-Item -LiteralPath $U['Path'] -Force -ErrorAction SilentlyContinue
    } else {
        [System.IO.File]::WriteAllBytes($U['Path'], [byte[]]$U['Bytes'])
    }
}

function Invoke-Native {
    # A console tool with its output captured (2>&1 on native commands throws under 'Stop' in 5.1).
    param([string]$FilePath, [string[]]$ArgumentList)
    $quoted = New-Object System.Collections.Generic.List[string]
    foreach ($a in $ArgumentList) {
        if ($a -match '[\s"]') { $quoted.Add('"' + $a.Replace('"', '\"') + '"') } else { $quoted.Add($a) }
    }
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $FilePath
    $psi.Arguments = $quoted -join ' '
    $psi.UseShellExecute = $false
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.CreateNoWindow = $true
    $proc = [System.Diagnostics.Process]::Start($psi)
    $stderrTask = $proc.StandardError.ReadToEndAsync()
    $stdout = $proc.StandardOutput.ReadToEnd()
    $proc.WaitForExit()
    $result = New-Dict
    $result['ExitCode'] = $proc.ExitCode
    $result['Output'] = ($stdout + $stderrTask.Result).Trim()
    return $result
}

function Get-HexString {
    param([byte[]]$Bytes)
    if ($null -eq $Bytes -or $Bytes.Length -eq 0) { return '' }
    return [System.BitConverter]::ToString($Bytes).Replace('-', '').ToLowerInvariant()
}

function ConvertFrom-HexString {
    param([string]$Hex)
    $clean = $Hex -replace '\s', ''
    if ($clean -notmatch '^([0-9a-fA-F]{2})*$') { return $null }
    $bytes = New-Object byte[] ($clean.Length / 2)
    for ($i = 0; $i -lt $bytes.Length; $i++) { $bytes[$i] = [System.Convert]::ToByte($clean.Substring($i * 2, 2), 16) }
    return , $bytes
}

function Get-SortedByLower {
    # Python's sorted(names, key=str.lower): ordinal order of the lower-cased names.
    param([string[]]$Names)
    if ($null -eq $Names -or $Names.Length -eq 0) { return , (New-Object string[] 0) }
    $keys = New-Object string[] $Names.Length
    $items = New-Object string[] $Names.Length
    for ($i = 0; $i -lt $Names.Length; $i++) {
        $keys[$i] = $Names[$i].ToLowerInvariant()
        $items[$i] = $Names[$i]
    }
    [System.Array]::Sort($keys, $items, [System.StringComparer]::Ordinal)
    return , $items
}

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

# == firewall =====================================================================================
# NetSecurity cmdlets; filters are joined to rules by InstanceID.
# https://learn.microsoft.com/en-us/powershell/module/netsecurity/get-netfirewallrule
# https://learn.microsoft.com/en-us/powershell/module/netsecurity/get-netfirewallportfilter
# https://learn.microsoft.com/en-us/powershell/module/netsecurity/get-netfirewalladdressfilter

# BEGIN OP TABLE
$script:OpTable['fw.rule.add'] = @{ Fn = 'Invoke-OpFwRuleAdd'; Args = 'rule:dict' }
$script:OpTable['fw.rule.set'] = @{ Fn = 'Invoke-OpFwRuleSet'; Args = 'match:dict enabled?:bool action?:str' }
$script:OpTable['fw.rule.remove'] = @{ Fn = 'Invoke-OpFwRuleRemove'; Args = 'match:dict' }
# END OP TABLE
$script:UndoHandlers['fw-delete'] = 'Undo-FwDelete'
$script:UndoHandlers['fw-state'] = 'Undo-FwState'
$script:UndoHandlers['fw-define'] = 'Undo-FwDefine'
$script:UndoHandlers['fw-recreate'] = 'Undo-FwRecreate'

function Get-PortList {
    # The twin's _ports: None/""/"Any" -> ["Any"]; int -> ["n"]; "a,b" -> ["a", "b"]; list -> strings.
    param($Value)
    if ($null -eq $Value -or ($Value -is [string] -and ($Value -eq '' -or $Value -eq 'Any'))) { return , [object[]]@('Any') }
    if (Test-Integer $Value) { return , [object[]]@([string]$Value) }
    if ($Value -is [string]) {
        return , [object[]]@($Value.Split(',') | ForEach-Object { $_.Trim() } | Where-Object { $_ -ne '' })
    }
    return , [object[]]@($Value | ForEach-Object { [string]$_ })
}

function Get-AddressList {
    # The twin's addresses: None/""/"Any"/"*" -> ["Any"]; "a,b" or a list -> strings.
    param($Value)
    $list = Get-PortList $Value
    foreach ($a in $list) { if ([string]$a -eq 'Any' -or [string]$a -eq '*') { return , [object[]]@('Any') } }
    return $list
}

function ConvertTo-IpAddress {
    # An IPv4 address in dotted quads or an IPv6 address, else $null ([IPAddress]::TryParse
    # alone also takes "10.1" or "12345", which the twin's ipaddress module refuses).
    param([string]$Text)
    $ip = $null
    if ($Text -notmatch '^\d{1,3}(\.\d{1,3}){3}$' -and $Text -notmatch ':') { return $null }
    if (-not [System.Net.IPAddress]::TryParse($Text, [ref]$ip)) { return $null }
    return $ip
}

function Get-AddressBits {
    # The address as a string of bits, for comparing and masking.
    param($Ip)
    return ((@($Ip.GetAddressBytes()) | ForEach-Object { [Convert]::ToString([int]$_, 2).PadLeft(8, '0') }) -join '')
}

function ConvertTo-AddressKey {
    # The twin's check_address: Any, a keyword (optionally ending in 4 or 6), an address, a
    # subnet by prefix or mask, or a "first-last" range; $null for anything else. The key is
    # the canonical form (keywords spelled as listed, subnets by prefix), so a rule read back
    # with a mask compares equal to a definition with a prefix.
    param([string]$Item)
    if ($Item -eq 'Any') { return 'Any' }
    foreach ($k in $script:AddressKeywords) {
        foreach ($suffix in @('', '4', '6')) { if ($Item -ieq ($k + $suffix)) { return ($k + $suffix) } }
    }
    $m = [regex]::Match($Item, '^([^/-]+)-([^/-]+)$')
    if ($m.Success) {
        $first = ConvertTo-IpAddress $m.Groups[1].Value.Trim()
        $last = ConvertTo-IpAddress $m.Groups[2].Value.Trim()
        if ($null -eq $first -or $null -eq $last -or $first.AddressFamily -ne $last.AddressFamily) { return $null }
        if ([string]::CompareOrdinal((Get-AddressBits $first), (Get-AddressBits $last)) -gt 0) { return $null }
        return ('{0}-{1}' -f $first, $last)
    }
    $m = [regex]::Match($Item, '^([^/]+)/([^/]+)$')
    if (-not $m.Success) {
        $ip = ConvertTo-IpAddress $Item
        if ($null -eq $ip) { return $null }
        return [string]$ip
    }
    $ip = ConvertTo-IpAddress $m.Groups[1].Value
    if ($null -eq $ip) { return $null }
    $width = 8 * @($ip.GetAddressBytes()).Count
    $suffix = $m.Groups[2].Value
    if ($suffix -match '^\d{1,3}$') {
        $prefix = [int]$suffix
    } else {
        $mask = ConvertTo-IpAddress $suffix
        if ($null -eq $mask -or $width -ne 32 -or $mask.AddressFamily -ne $ip.AddressFamily) { return $null }
        $bits = Get-AddressBits $mask
        if ($bits -notmatch '^1*0*$') { return $null }
        $prefix = $bits.TrimEnd('0').Length
    }
    if ($prefix -gt $width) { return $null }
    return ('{0}/{1}' -f $ip, $prefix)
}

function Get-AddressKey {
    # A rule's remote addresses in canonical form, for comparing definitions.
    param($Addresses)
    return ((@($Addresses) | ForEach-Object { $k = ConvertTo-AddressKey ([string]$_); if ($null -eq $k) { [string]$_ } else { $k } }) -join ',')
}

function Get-SelectorPorts {
    # The twin's _expand: ports named by a selector (numbers, lists, "a,b", "lo-hi").
    param($Value)
    $out = New-Object System.Collections.Generic.List[int]
    foreach ($p in (Get-PortList $Value)) {
        if ($p -eq 'Any') { continue }
        $m = [regex]::Match($p, '^(\d+)(?:-(\d+))?$')
        if (-not $m.Success) { Stop-Op ('firewall selector: {0} is not a port, list or range' -f (Format-Repr $p)) }
        $lo = [int]$m.Groups[1].Value
        $hi = $lo
        if ($m.Groups[2].Success) { $hi = [int]$m.Groups[2].Value }
        for ($i = $lo; $i -le $hi; $i++) { $out.Add($i) }
    }
    return , $out.ToArray()
}

function Test-PortMatch {
    # port_matches: "Any", an exact number or a "lo-hi" range; keywords (RPC, ...) never match.
    param($Ports, [int]$Port)
    foreach ($p in $Ports) {
        if ($p -eq 'Any') { return $true }
        $m = [regex]::Match([string]$p, '^(\d+)-(\d+)$')
        if ($m.Success) {
            if ([int]$m.Groups[1].Value -le $Port -and $Port -le [int]$m.Groups[2].Value) { return $true }
        } elseif ([string]$p -match '^\d+$' -and [int]$p -eq $Port) {
            return $true
        }
    }
    return $false
}

function Get-RuleGroupName {
    # The two Remote Desktop groups by their resource id (English names, as the twin spells
    # them, whatever the display language); any other group by its display name.
    param([string]$Group, [string]$DisplayGroup)
    foreach ($id in $script:RdGroupIds.Keys) {
        if ($Group -ieq $id) { return $script:RdGroupIds[$id] }
    }
    return $DisplayGroup
}

function Get-GroupQuery {
    # How to ask Get-NetFirewallRule for a group: -Group with the resource id of a Remote
    # Desktop group, -DisplayGroup for any other name.
    param([string]$Name)
    $q = @{}
    foreach ($id in $script:RdGroupIds.Keys) {
        if ($script:RdGroupIds[$id] -ieq $Name) { $q['Group'] = $id; return $q }
    }
    $q['DisplayGroup'] = [System.Management.Automation.WildcardPattern]::Escape($Name)
    return $q
}

function ConvertTo-RuleJson {
    # A NetFirewallRule and its filters in the twin's Rule.to_json shape.
    param($Rule, $PortFilter, $AppFilter, $AddressFilter)
    $r = New-Dict
    $r['name'] = [string]$Rule.Name
    $r['display_name'] = [string]$Rule.DisplayName
    $r['group'] = Get-RuleGroupName ([string]$Rule.Group) ([string]$Rule.DisplayGroup)
    $r['direction'] = 'In'
    if ([string]$Rule.Direction -eq 'Outbound') { $r['direction'] = 'Out' }
    $r['action'] = [string]$Rule.Action
    $r['protocol'] = 'Any'
    $r['local_port'] = [object[]]@('Any')
    $r['remote_port'] = [object[]]@('Any')
    if ($null -ne $PortFilter) {
        $r['protocol'] = [string]$PortFilter.Protocol
        $r['local_port'] = Get-PortList (@($PortFilter.LocalPort) -join ',')
        $r['remote_port'] = Get-PortList (@($PortFilter.RemotePort) -join ',')
    }
    $r['program'] = 'Any'
    if ($null -ne $AppFilter -and [string]$AppFilter.Program -ne '') { $r['program'] = [string]$AppFilter.Program }
    # Profile is a flags enum: "Any" or "Domain, Private".
    $r['profiles'] = [object[]]@(([string]$Rule.Profile).Split(',') | ForEach-Object { $_.Trim() } | Where-Object { $_ -ne '' })
    # Enabled is an enum whose values are the strings True/False, not a [bool].
    $r['enabled'] = ([string]$Rule.Enabled -eq 'True')
    # Where the rule comes from: the machine's own store, or Group Policy (an ActiveStore read).
    $source = [string]$Rule.PolicyStoreSourceType
    $r['remote_address'] = [object[]]@('Any')
    if ($null -ne $AddressFilter) { $r['remote_address'] = Get-AddressList (@($AddressFilter.RemoteAddress) -join ',') }
    $r['store'] = 'local'
    if ($source -eq 'GroupPolicy') { $r['store'] = 'gpo' } elseif ($source -ne '' -and $source -ne 'Local') { $r['store'] = $source.ToLowerInvariant() }
    return $r
}

function Get-FwRules {
    # Rules (with filters) as {Json, Group}; a selector's name or group narrows the query.
    # Ops read and change the local PersistentStore (the cmdlets' default); -Active reads the
    # effective rules (ActiveStore: local plus Group Policy), for facts.
    # https://learn.microsoft.com/en-us/powershell/module/netsecurity/get-netfirewallrule
    param([System.Collections.IDictionary]$Selector = $null, [switch]$Active)
    $store = @{}
    if ($Active) { $store['PolicyStore'] = 'ActiveStore' }
    $rules = @()
    if ($null -ne $Selector -and $Selector.Contains('name')) {
        $pattern = [System.Management.Automation.WildcardPattern]::Escape([string]$Selector['name'])
        $rules = @(Get-NetFirewallRule -Name $pattern @store -ErrorAction SilentlyContinue)
    } elseif ($null -ne $Selector -and $Selector.Contains('group')) {
        $query = Get-GroupQuery ([string]$Selector['group'])
        $rules = @(Get-NetFirewallRule @query @store -ErrorAction SilentlyContinue)
    } else {
        $rules = @(Get-NetFirewallRule @store -ErrorAction Stop)
    }
    $ports = @{}
    $apps = @{}
    $addrs = @{}
    if ($rules.Count -gt 20) {
        foreach ($f in @(Get-NetFirewallPortFilter -All @store -ErrorAction Stop)) { $ports[[string]$f.InstanceID] = $f }
        foreach ($f in @(Get-NetFirewallApplicationFilter -All @store -ErrorAction Stop)) { $apps[[string]$f.InstanceID] = $f }
        foreach ($f in @(Get-NetFirewallAddressFilter -All @store -ErrorAction Stop)) { $addrs[[string]$f.InstanceID] = $f }
    } else {
        foreach ($rule in $rules) {
            $ports[[string]$rule.InstanceID] = Get-NetFirewallPortFilter -AssociatedNetFirewallRule $rule -ErrorAction Stop
            $apps[[string]$rule.InstanceID] = Get-NetFirewallApplicationFilter -AssociatedNetFirewallRule $rule -ErrorAction Stop
            $addrs[[string]$rule.InstanceID] = Get-NetFirewallAddressFilter -AssociatedNetFirewallRule $rule -ErrorAction Stop
        }
    }
    $out = New-Object System.Collections.Generic.List[object]
    foreach ($rule in $rules) {
        $id = [string]$rule.InstanceID
        $entry = New-Dict
        $entry['Json'] = ConvertTo-RuleJson $rule $ports[$id] $apps[$id] $addrs[$id]
        $entry['Group'] = [string]$rule.Group
        $out.Add($entry)
    }
    return , $out
}

function Test-Selector {
    # Unknown keys and bad ports fail before any rule is read.
    param([System.Collections.IDictionary]$Selector)
    foreach ($key in $Selector.Keys) {
        if ($script:MatchKeys -cnotcontains $key) {
            $known = '(' + ((@($script:MatchKeys) | ForEach-Object { Format-Repr $_ }) -join ', ') + ')'
            Stop-Op ('firewall selector: unknown key {0} (known: {1})' -f (Format-Repr $key), $known)
        }
        if ($key -eq 'local_port' -or $key -eq 'remote_port') { $null = Get-SelectorPorts $Selector[$key] }
    }
}

function Test-RuleMatch {
    # Rule.matches: every selector key must match (ports: any named port in the rule's ports).
    param([System.Collections.IDictionary]$Json, [System.Collections.IDictionary]$Selector)
    foreach ($key in $Selector.Keys) {
        $want = $Selector[$key]
        if ($key -eq 'local_port' -or $key -eq 'remote_port') {
            $hit = $false
            foreach ($port in (Get-SelectorPorts $want)) { if (Test-PortMatch $Json[$key] $port) { $hit = $true } }
            if (-not $hit) { return $false }
        } elseif (([string]$Json[$key]).ToLowerInvariant() -cne (Format-PyStr $want).ToLowerInvariant()) {
            return $false
        }
    }
    return $true
}

function Format-PyStr {
    # Python's str() for a selector value.
    param($Value)
    if ($null -eq $Value) { return 'None' }
    if ($Value -is [bool]) { return (Format-Repr $Value) }
    if ($Value -is [string]) { return $Value }
    return (Format-Repr $Value)
}

function Select-FwRules {
    param([System.Collections.IDictionary]$Selector)
    if ($Selector.Count -eq 0) { Stop-Op 'firewall selector is empty: refusing to touch every rule' }
    Test-Selector $Selector
    $out = New-Object System.Collections.Generic.List[object]
    foreach ($e in (Get-FwRules $Selector)) { if (Test-RuleMatch $e['Json'] $Selector) { $out.Add($e) } }
    return , $out
}

function ConvertTo-RuleSpec {
    # Rule.from_json: defaults and validation of an fw.rule.add definition.
    param([System.Collections.IDictionary]$Data)
    $unknown = @($Data.Keys | Where-Object { $script:RuleFields -cnotcontains $_ } | Sort-Object)
    if ($unknown.Count -gt 0) {
        Stop-Op ('firewall rule: unknown field(s) [{0}]' -f ((@($unknown) | ForEach-Object { Format-Repr $_ }) -join ', '))
    }
    if (-not $Data.Contains('name')) { Stop-Op "firewall rule: missing field 'name'" }
    $r = New-Dict
    $r['name'] = Format-PyStr $Data['name']
    $r['display_name'] = $r['name']
    if ($Data.Contains('display_name')) { $r['display_name'] = Format-PyStr $Data['display_name'] }
    $r['group'] = ''
    if ($Data.Contains('group')) { $r['group'] = Format-PyStr $Data['group'] }
    $r['direction'] = 'In'
    if ($Data.Contains('direction')) { $r['direction'] = Format-PyStr $Data['direction'] }
    $r['action'] = 'Allow'
    if ($Data.Contains('action')) { $r['action'] = Format-PyStr $Data['action'] }
    $r['protocol'] = 'TCP'
    if ($Data.Contains('protocol')) { $r['protocol'] = Format-PyStr $Data['protocol'] }
    $r['local_port'] = Get-PortList (Get-Arg $Data 'local_port')
    $r['remote_port'] = Get-PortList (Get-Arg $Data 'remote_port')
    $r['program'] = 'Any'
    if ($Data.Contains('program')) { $r['program'] = Format-PyStr $Data['program'] }
    $r['profiles'] = Get-PortList (Get-Arg $Data 'profiles')
    $r['enabled'] = $true
    if ($Data.Contains('enabled')) { $r['enabled'] = [bool]$Data['enabled'] }
    $r['store'] = 'local'
    if ($Data.Contains('store')) { $r['store'] = Format-PyStr $Data['store'] }
    $r['remote_address'] = Get-AddressList (Get-Arg $Data 'remote_address')
    if ($r['direction'] -cne 'In' -and $r['direction'] -cne 'Out') { Stop-Op ('firewall rule {0}: direction must be In or Out' -f $r['name']) }
    if ($r['action'] -cne 'Allow' -and $r['action'] -cne 'Block') { Stop-Op ('firewall rule {0}: action must be Allow or Block' -f $r['name']) }
    foreach ($a in $r['remote_address']) {
        if ($null -eq (ConvertTo-AddressKey ([string]$a))) {
            Stop-Op ('firewall rule {0}: remote_address {1} is not an address, subnet, range or keyword ({2})' -f $r['name'], (Format-Repr ([string]$a)), ($script:AddressKeywords -join ', '))
        }
    }
    foreach ($proto in @('TCP', 'UDP', 'Any')) { if ($r['protocol'] -eq $proto) { $r['protocol'] = $proto } }
    if ($r['store'] -cne 'local') {
        Stop-Op ('firewall rule {0}: rules are added to the local store; a rule of store {1} is made where that store is kept (a GPO)' -f $r['name'], (Format-Repr $r['store']))
    }
    return $r
}

function Get-ProfileKey {
    # Profiles compared in Windows' order, whatever order the op listed them in.
    param($Profiles)
    $order = @('Any', 'Domain', 'Private', 'Public')
    return ((@($Profiles) | Sort-Object { [array]::IndexOf($order, [string]$_) }) -join ',')
}

function Test-RuleEqual {
    param([System.Collections.IDictionary]$A, [System.Collections.IDictionary]$B)
    foreach ($f in @('display_name', 'group', 'direction', 'action', 'program')) { if ([string]$A[$f] -cne [string]$B[$f]) { return $false } }
    if ([string]$A['name'] -ne [string]$B['name']) { return $false }
    if ([string]$A['protocol'] -ne [string]$B['protocol']) { return $false }
    if ([bool]$A['enabled'] -ne [bool]$B['enabled']) { return $false }
    if ((@($A['local_port']) -join ',') -cne (@($B['local_port']) -join ',')) { return $false }
    if ((@($A['remote_port']) -join ',') -cne (@($B['remote_port']) -join ',')) { return $false }
    if ((Get-AddressKey $A['remote_address']) -ne (Get-AddressKey $B['remote_address'])) { return $false }
    return ((Get-ProfileKey $A['profiles']) -eq (Get-ProfileKey $B['profiles']))
}

function New-FwRule {
    # New-NetFirewallRule from a twin-shaped definition; $Group may be an indirect string.
    # https://learn.microsoft.com/en-us/powershell/module/netsecurity/new-netfirewallrule
    param([System.Collections.IDictionary]$Spec, [string]$Group)
    $direction = 'Inbound'
    if ($Spec['direction'] -eq 'Out') { $direction = 'Outbound' }
    $enabled = 'False'
    if ($Spec['enabled']) { $enabled = 'True' }
    $params = @{
        Name          = $Spec['name']
        DisplayName   = $Spec['display_name']
        Direction     = $direction
        Action        = $Spec['action']
        Enabled       = $enabled
        Profile       = (@($Spec['profiles']) -join ',')
        Program       = $Spec['program']
        RemoteAddress = [string[]]@($Spec['remote_address'])
    }
    if ($Group -ne '') {
        $known = Get-GroupQuery $Group  # a Remote Desktop group joins by its resource id
        if ($known.Contains('Group')) { $Group = $known['Group'] }
        $params['Group'] = $Group
    }
    $portsGiven = ((@($Spec['local_port']) -join ',') -ne 'Any') -or ((@($Spec['remote_port']) -join ',') -ne 'Any')
    if ($Spec['protocol'] -ne 'Any') { $params['Protocol'] = $Spec['protocol'] }
    if ($Spec['protocol'] -eq 'TCP' -or $Spec['protocol'] -eq 'UDP') {
        $params['LocalPort'] = [string[]]@($Spec['local_port'])
        $params['RemotePort'] = [string[]]@($Spec['remote_port'])
    } elseif ($portsGiven) {
        Stop-Op ('firewall rule {0}: ports need protocol TCP or UDP' -f $Spec['name'])
    }
    $null = New-NetFirewallRule @params -ErrorAction Stop
}

function Set-FwRuleDefinition {
    # Bring an existing rule to a definition. Same group: Set-NetFirewallRule keeps the rule's
    # other properties (service, addresses); another group: remove and re-create.
    # https://learn.microsoft.com/en-us/powershell/module/netsecurity/set-netfirewallrule
    param([System.Collections.IDictionary]$Spec, [System.Collections.IDictionary]$Current, [string]$CurrentGroupRaw, [string]$Group)
    if ($Spec['group'] -cne $Current['group']) {
        Remove-NetFirewallRule -Name ([System.Management.Automation.WildcardPattern]::Escape($Current['name'])) -ErrorAction Stop
        New-FwRule $Spec $Group
        return
    }
    $direction = 'Inbound'
    if ($Spec['direction'] -eq 'Out') { $direction = 'Outbound' }
    $enabled = 'False'
    if ($Spec['enabled']) { $enabled = 'True' }
    $params = @{
        Name           = [System.Management.Automation.WildcardPattern]::Escape($Current['name'])
        NewDisplayName = $Spec['display_name']
        Direction      = $direction
        Action         = $Spec['action']
        Enabled        = $enabled
        Profile        = (@($Spec['profiles']) -join ',')
        Program        = $Spec['program']
        Protocol       = $Spec['protocol']
        RemoteAddress  = [string[]]@($Spec['remote_address'])
    }
    if ($Spec['protocol'] -eq 'TCP' -or $Spec['protocol'] -eq 'UDP') {
        $params['LocalPort'] = [string[]]@($Spec['local_port'])
        $params['RemotePort'] = [string[]]@($Spec['remote_port'])
    }
    Set-NetFirewallRule @params -ErrorAction Stop
}

function Get-ActiveProfile {
    # One of Domain/Private/Public; with several active, the most restrictive (Public first).
    # https://learn.microsoft.com/en-us/powershell/module/netsecurity/get-netfirewallsetting
    $active = ''
    try { $active = [string](Get-NetFirewallSetting -PolicyStore ActiveStore -ErrorAction Stop).ActiveProfile } catch { $active = '' }
    if ($active -eq '') {
        $cats = @(Get-NetConnectionProfile -ErrorAction SilentlyContinue | ForEach-Object { [string]$_.NetworkCategory })
        $active = ($cats | ForEach-Object { $_.Replace('DomainAuthenticated', 'Domain') }) -join ','
    }
    foreach ($p in @('Public', 'Private', 'Domain')) { if ($active -match $p) { return $p } }
    return 'Public'
}

function Invoke-OpFwRuleAdd {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $spec = ConvertTo-RuleSpec $A['rule']
    $detail = 'rule {0}' -f (Format-PyStr (Get-Arg $A['rule'] 'name'))
    $selector = New-Dict
    $selector['name'] = $spec['name']
    $existing = @((Get-FwRules $selector) | Where-Object { $_['Json']['name'] -eq $spec['name'] })
    $undo = New-Dict
    if ($existing.Count -eq 0) {
        $undo['Kind'] = 'fw-delete'
        $undo['Name'] = $spec['name']
        Add-Undo $undo
        New-FwRule $spec $spec['group']
        return New-OpResult 'fw.rule.add' $true $detail
    }
    $current = $existing[0]
    if (Test-RuleEqual $current['Json'] $spec) { return New-OpResult 'fw.rule.add' $false $detail }
    $undo['Kind'] = 'fw-define'
    $undo['Spec'] = $current['Json']
    $undo['Group'] = $current['Group']
    $undo['Name'] = $spec['name']
    Add-Undo $undo
    $group = $spec['group']
    if ($spec['group'] -ceq $current['Json']['group']) { $group = $current['Group'] }
    Set-FwRuleDefinition $spec $current['Json'] $current['Group'] $group
    return New-OpResult 'fw.rule.add' $true $detail
}

function Invoke-OpFwRuleSet {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $match = $A['match']
    $n = 0
    foreach ($e in (Select-FwRules $match)) {
        $rule = $e['Json']
        $enabled = [bool]$rule['enabled']
        $action = [string]$rule['action']
        if ($A.Contains('enabled') -and $null -ne $A['enabled']) { $enabled = [bool]$A['enabled'] }
        if ($A.Contains('action') -and $null -ne $A['action']) {
            $action = [string]$A['action']
            if ($action -cne 'Allow' -and $action -cne 'Block') {
                Stop-Op ('fw.rule.set: action must be Allow or Block, not {0}' -f (Format-Repr $A['action']))
            }
        }
        if ($enabled -eq [bool]$rule['enabled'] -and $action -ceq [string]$rule['action']) { continue }
        $undo = New-Dict
        $undo['Kind'] = 'fw-state'
        $undo['Name'] = $rule['name']
        $undo['Enabled'] = [bool]$rule['enabled']
        $undo['Action'] = [string]$rule['action']
        Add-Undo $undo
        $flag = 'False'
        if ($enabled) { $flag = 'True' }
        Set-NetFirewallRule -Name ([System.Management.Automation.WildcardPattern]::Escape($rule['name'])) -Enabled $flag -Action $action -ErrorAction Stop
        $n++
    }
    return New-OpResult 'fw.rule.set' ($n -gt 0) ('{0} rule(s) changed matching {1}' -f $n, (Format-Repr $match))
}

function Invoke-OpFwRuleRemove {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $match = $A['match']
    $doomed = Select-FwRules $match
    foreach ($e in $doomed) {
        $undo = New-Dict
        $undo['Kind'] = 'fw-recreate'
        $undo['Spec'] = $e['Json']
        $undo['Group'] = $e['Group']
        $undo['Name'] = $e['Json']['name']
        Add-Undo $undo
        Remove-NetFirewallRule -Name ([System.Management.Automation.WildcardPattern]::Escape($e['Json']['name'])) -ErrorAction Stop
    }
    $n = $doomed.Count
    return New-OpResult 'fw.rule.remove' ($n -gt 0) ('{0} rule(s) removed matching {1}' -f $n, (Format-Repr $match))
}

function Undo-FwDelete {
    # Undo kind 'fw-delete': remove a rule the batch added (a rule already gone is fine; any
    # other failure must reach "rollback incomplete", so the removal itself stops on errors).
    param([System.Collections.IDictionary]$U)
    $name = [System.Management.Automation.WildcardPattern]::Escape($U['Name'])
    if (@(Get-NetFirewallRule -Name $name -ErrorAction SilentlyContinue).Count -eq 0) { return }
    Remove-NetFirewallRule -Name $name -ErrorAction Stop
}

function Undo-FwState {
    # Undo kind 'fw-state': enabled and action as they were.
    param([System.Collections.IDictionary]$U)
    $flag = 'False'
    if ($U['Enabled']) { $flag = 'True' }
    Set-NetFirewallRule -Name ([System.Management.Automation.WildcardPattern]::Escape($U['Name'])) -Enabled $flag -Action $U['Action'] -ErrorAction Stop
}

function Undo-FwDefine {
    # Undo kind 'fw-define': the rule's earlier definition, re-created if it is gone.
    param([System.Collections.IDictionary]$U)
    $selector = New-Dict
    $selector['name'] = $U['Name']
    $now = @((Get-FwRules $selector) | Where-Object { $_['Json']['name'] -eq $U['Name'] })
    if ($now.Count -eq 0) { New-FwRule $U['Spec'] $U['Group'] } else { Set-FwRuleDefinition $U['Spec'] $now[0]['Json'] $now[0]['Group'] $U['Group'] }
}

function Undo-FwRecreate {
    # Undo kind 'fw-recreate': a removed rule made again from its saved definition.
    param([System.Collections.IDictionary]$U)
    New-FwRule $U['Spec'] $U['Group']
}

# == services =====================================================================================
# Start/Stop/Restart/Set-Service; the start mode comes from Win32_Service.
# https://learn.microsoft.com/en-us/windows/win32/cimwin32prov/win32-service

# BEGIN OP TABLE
$script:OpTable['svc.start'] = @{ Fn = 'Invoke-OpSvcStart'; Args = 'name:str' }
$script:OpTable['svc.stop'] = @{ Fn = 'Invoke-OpSvcStop'; Args = 'name:str' }
$script:OpTable['svc.restart'] = @{ Fn = 'Invoke-OpSvcRestart'; Args = 'name:str if_changed?:bool' }
$script:OpTable['svc.config'] = @{ Fn = 'Invoke-OpSvcConfig'; Args = 'name:str start_type:str' }
# END OP TABLE
$script:UndoHandlers['service'] = 'Undo-ServiceState'

function Get-ServiceExact {
    param([string]$Name)
    $svc = [System.ServiceProcess.ServiceController]::GetServices() | Where-Object { $_.ServiceName -eq $Name } | Select-Object -First 1
    if ($null -eq $svc) { Stop-Op ('no service named {0}' -f (Format-Repr $Name)) }
    return $svc
}

function Get-ServiceState {
    param([string]$Name)
    $svc = Get-ServiceExact $Name
    $filter = "Name='{0}'" -f $svc.ServiceName.Replace('\', '\\').Replace("'", "\'")
    $mode = [string](Get-CimInstance -ClassName Win32_Service -Filter $filter).StartMode
    $start = 'Manual'
    if ($mode -eq 'Auto') { $start = 'Automatic' }
    if ($mode -eq 'Disabled') { $start = 'Disabled' }
    $state = New-Dict
    $state['name'] = $svc.ServiceName
    $state['status'] = [string]$svc.Status
    $state['start_type'] = $start
    return $state
}

function Add-ServiceUndo {
    param([string]$Name)
    $s = Get-ServiceState $Name
    $deps = @((Get-ServiceExact $Name).DependentServices | Where-Object { $_.Status -eq 'Running' } | ForEach-Object { $_.ServiceName })
    $undo = New-Dict
    $undo['Kind'] = 'service'
    $undo['Name'] = $s['name']
    $undo['Status'] = $s['status']
    $undo['StartType'] = $s['start_type']
    $undo['Dependents'] = $deps
    Add-Undo $undo
}

function Invoke-OpSvcStart {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $s = Get-ServiceState ([string]$A['name'])
    if ($s['status'] -eq 'Running') { return New-OpResult 'svc.start' $false ('{0} running' -f $A['name']) }
    if ($s['start_type'] -eq 'Disabled') { Stop-Op ('service {0} is disabled and cannot be started' -f $s['name']) }
    Add-ServiceUndo $s['name']
    # TermService makes its own self-signed certificate when it starts without one.
    Start-Service -Name $s['name']
    return New-OpResult 'svc.start' $true ('{0} running' -f $A['name'])
}

function Invoke-OpSvcStop {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $s = Get-ServiceState ([string]$A['name'])
    if ($s['status'] -eq 'Stopped') { return New-OpResult 'svc.stop' $false ('{0} stopped' -f $A['name']) }
    Add-ServiceUndo $s['name']
    # -Force: TermService has dependents (UmRdpService); the undo starts them again.
    Stop-Service -Name $s['name'] -Force
    return New-OpResult 'svc.stop' $true ('{0} stopped' -f $A['name'])
}

function Invoke-OpSvcRestart {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    if ((Get-Arg $A 'if_changed') -and -not $ChangedBefore) {
        return New-OpResult 'svc.restart' $false ('{0}: nothing changed, no restart' -f $A['name'])
    }
    $s = Get-ServiceState ([string]$A['name'])
    if ($s['start_type'] -eq 'Disabled') { Stop-Op ('service {0} is disabled and cannot be started' -f $s['name']) }
    Add-ServiceUndo $s['name']
    if ($s['status'] -eq 'Stopped') { Start-Service -Name $s['name'] } else { Restart-Service -Name $s['name'] -Force }
    return New-OpResult 'svc.restart' $true ('{0} restarted' -f $A['name'])
}

function Invoke-OpSvcConfig {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $want = [string]$A['start_type']
    if ($script:StartTypes -cnotcontains $want) {
        Stop-Op ("svc.config: start_type must be one of ('Automatic', 'Manual', 'Disabled')")
    }
    $s = Get-ServiceState ([string]$A['name'])
    if ($s['start_type'] -eq $want) { return New-OpResult 'svc.config' $false ('{0} start type {1}' -f $A['name'], $want) }
    Add-ServiceUndo $s['name']
    Set-Service -Name $s['name'] -StartupType $want
    return New-OpResult 'svc.config' $true ('{0} start type {1}' -f $A['name'], $want)
}

function Undo-ServiceState {
    # Undo kind 'service': start type and status as they were, dependents started again.
    param([System.Collections.IDictionary]$U)
    $s = Get-ServiceState $U['Name']
    if ($s['start_type'] -ne $U['StartType']) { Set-Service -Name $U['Name'] -StartupType $U['StartType'] }
    if ($U['Status'] -eq 'Stopped' -and $s['status'] -ne 'Stopped') { Stop-Service -Name $U['Name'] -Force }
    if ($U['Status'] -eq 'Running') {
        if ($s['status'] -ne 'Running') { Start-Service -Name $U['Name'] }
        foreach ($d in @($U['Dependents'])) { Start-Service -Name $d }
    }
}

# == certificates =================================================================================
# Cert:\LocalMachine\<store>; private keys are files in ...\Crypto\RSA\MachineKeys (CAPI) or
# ...\Crypto\Keys (CNG). https://learn.microsoft.com/en-us/windows/win32/seccng/key-storage-and-retrieval

# BEGIN OP TABLE
$script:OpTable['cert.import'] = @{ Fn = 'Invoke-OpCertImport'; Args = 'store:str pfx:str thumbprint:str password?:str' }
$script:OpTable['cert.remove'] = @{ Fn = 'Invoke-OpCertRemove'; Args = 'store:str which:str' }
$script:OpTable['machinekeys.corrupt'] = @{ Fn = 'Invoke-OpMachineKeysCorrupt'; Args = 'store:str' }
# END OP TABLE
$script:UndoHandlers['cert-delete'] = 'Undo-CertDelete'
$script:UndoHandlers['cert-restore'] = 'Undo-CertRestore'

$script:KeyMap = $null
$script:KeyMapDirty = $false

function Get-KeyDirs {
    $root = Join-Path $env:ProgramData 'Microsoft\Crypto'
    return , @((Join-Path $root 'RSA\MachineKeys'), (Join-Path $root 'Keys'))
}

function Get-KeyMap {
    # thumbprint -> key file path, remembered while the key could be opened: once a key file is
    # corrupt its container can no longer name it.
    if ($null -eq $script:KeyMap) {
        $script:KeyMap = New-Dict
        if (Test-Path -LiteralPath $script:KeyMapPath) {
            try {
                $saved = ConvertFrom-JsonText ([System.IO.File]::ReadAllText($script:KeyMapPath))
                foreach ($k in $saved.Keys) { $script:KeyMap[$k] = $saved[$k] }
            } catch { $script:KeyMap = New-Dict }
        }
    }
    return $script:KeyMap
}

function Save-KeyMap {
    if ($script:KeyMapDirty) {
        if (-not (Test-Path -LiteralPath $script:AgentDir)) { $null = New-Item -ItemType Directory -Force -Path $script:AgentDir }
        [System.IO.File]::WriteAllText($script:KeyMapPath, (ConvertTo-JsonText (Get-KeyMap)), (New-Object System.Text.UTF8Encoding $false))
        $script:KeyMapDirty = $false
    }
}

function Find-KeyFile {
    param([string]$UniqueName)
    foreach ($dir in (Get-KeyDirs)) {
        $path = Join-Path $dir $UniqueName
        if (Test-Path -LiteralPath $path) { return $path }
    }
    return $null
}

function Get-CertKey {
    # {Status: ok|corrupt|missing, Path: key file or $null}. "ok" means the key opens and signs.
    # https://learn.microsoft.com/en-us/dotnet/api/system.security.cryptography.x509certificates.rsacertificateextensions.getrsaprivatekey
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Cert)
    $info = New-Dict
    $info['Status'] = 'missing'
    $info['Path'] = $null
    $map = Get-KeyMap
    if ($map.Contains($Cert.Thumbprint)) { $info['Path'] = [string]$map[$Cert.Thumbprint] }
    if (-not $Cert.HasPrivateKey) { return $info }
    try {
        $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Cert)
        $unique = $null
        if ($null -eq $key) {
            $key = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Cert)
            if ($null -eq $key) { Stop-Op 'no RSA or ECDSA private key' }
            $null = $key.SignData([byte[]](1, 2, 3), [System.Security.Cryptography.HashAlgorithmName]::SHA256)
        } else {
            # SHA-1: every RSA provider can sign with it (this only proves the key opens).
            $null = $key.SignData([byte[]](1, 2, 3), [System.Security.Cryptography.HashAlgorithmName]::SHA1,
                [System.Security.Cryptography.RSASignaturePadding]::Pkcs1)
        }
        if ($key -is [System.Security.Cryptography.RSACryptoServiceProvider]) {
            $unique = $key.CspKeyContainerInfo.UniqueKeyContainerName
        } elseif ($key -is [System.Security.Cryptography.RSACng] -or $key -is [System.Security.Cryptography.ECDsaCng]) {
            $unique = $key.Key.UniqueName
        }
        $info['Status'] = 'ok'
        if ($null -ne $unique) {
            $path = Find-KeyFile $unique
            if ($null -ne $path) {
                $info['Path'] = $path
                if ([string]$map[$Cert.Thumbprint] -ne $path) {
                    $map[$Cert.Thumbprint] = $path
                    $script:KeyMapDirty = $true
                }
            }
        }
    } catch {
        # The key would not open or sign: corrupt when its file is still there.
        $info['Status'] = 'missing'
        if ($null -ne $info['Path'] -and (Test-Path -LiteralPath $info['Path'])) {
            $info['Status'] = 'corrupt'
        } elseif (-not (Test-ErrorHResult $_ -2146893802)) {
            # -2146893802 = 0x80090016 NTE_BAD_KEYSET ("Keyset does not exist" in English):
            # no key at all is missing; any other failure to open or sign is a corrupt key.
            $info['Status'] = 'corrupt'
        }
    }
    return $info
}

function Test-CertUsable {
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Cert, [System.Collections.IDictionary]$Key)
    $now = [DateTime]::Now
    return ($Key['Status'] -eq 'ok' -and $Cert.NotBefore -le $now -and $now -le $Cert.NotAfter)
}

function Open-CertStore {
    # LocalMachine\<name>; $null when the store does not exist and ReadOnly was asked.
    # https://learn.microsoft.com/en-us/dotnet/api/system.security.cryptography.x509certificates.x509store
    param([string]$Name, [bool]$Write)
    $store = New-Object System.Security.Cryptography.X509Certificates.X509Store($Name, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    $flags = [System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly
    if ($Write) { $flags = [System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite }
    $existing = $flags -bor [System.Security.Cryptography.X509Certificates.OpenFlags]::OpenExistingOnly
    try {
        $store.Open($existing)
    } catch {
        if (-not $Write) { return $null }
        $store.Open($flags)
    }
    return $store
}

function Format-DistinguishedName {
    # RFC 4514 style like the twin's rfc4514_string(): "CN=a,O=b".
    param([System.Security.Cryptography.X509Certificates.X500DistinguishedName]$Name)
    return ($Name.Name -replace ', (?=[A-Za-z][A-Za-z0-9.]*=)', ',')
}

function Get-CrlUrls {
    # URIs of the CRL distribution points extension (2.5.29.31): DistributionPoint
    # [0] distributionPoint -> [0] fullName -> [6] uniformResourceIdentifier (RFC 5280 4.2.1.13).
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Cert)
    $urls = New-Object System.Collections.Generic.List[string]
    foreach ($ext in $Cert.Extensions) {
        if ($ext.Oid.Value -ne '2.5.29.31') { continue }
        foreach ($dp in (Read-DerChildren $ext.RawData 0 $ext.RawData.Length)) {
            if ($dp['Tag'] -ne 0x30) { continue }
            foreach ($dpn in (Read-DerChildren $ext.RawData $dp['Start'] $dp['End'])) {
                if ($dpn['Tag'] -ne 0xA0) { continue }
                foreach ($full in (Read-DerChildren $ext.RawData $dpn['Start'] $dpn['End'])) {
                    if ($full['Tag'] -ne 0xA0) { continue }
                    foreach ($gn in (Read-DerChildren $ext.RawData $full['Start'] $full['End'])) {
                        if ($gn['Tag'] -eq 0x86) {
                            $urls.Add([System.Text.Encoding]::ASCII.GetString($ext.RawData, $gn['Start'], $gn['End'] - $gn['Start']))
                        }
                    }
                }
            }
        }
    }
    return , $urls.ToArray()
}

function Read-DerChildren {
    # The TLVs inside [Start, End) of a DER buffer; a lone outer SEQUENCE is opened first.
    param([byte[]]$Data, [int]$Start, [int]$End)
    $out = New-Object System.Collections.Generic.List[object]
    $i = $Start
    if ($Start -eq 0 -and $End -eq $Data.Length -and $Data.Length -gt 1 -and $Data[0] -eq 0x30) {
        $outer = Read-DerHeader $Data 0
        $i = $outer['Start']
        $End = $outer['End']
    }
    while ($i -lt $End) {
        $tlv = Read-DerHeader $Data $i
        $out.Add($tlv)
        $i = $tlv['End']
    }
    return , $out
}

function Read-DerHeader {
    param([byte[]]$Data, [int]$At)
    $tag = [int]$Data[$At]
    $len = [int]$Data[$At + 1]
    $start = $At + 2
    if ($len -ge 0x80) {
        $n = $len - 0x80
        $len = 0
        for ($j = 0; $j -lt $n; $j++) { $len = ($len * 256) + [int]$Data[$start + $j] }
        $start += $n
    }
    $tlv = New-Dict
    $tlv['Tag'] = $tag
    $tlv['Start'] = $start
    $tlv['End'] = $start + $len
    return $tlv
}

function ConvertTo-CertJson {
    # CertEntry.describe() plus the key status.
    param([System.Security.Cryptography.X509Certificates.X509Certificate2]$Cert, [System.Collections.IDictionary]$Key)
    $iso = "yyyy-MM-dd'T'HH:mm:ss'+00:00'"
    $inv = [System.Globalization.CultureInfo]::InvariantCulture
    $eku = New-Object System.Collections.Generic.List[string]
    foreach ($ext in $Cert.Extensions) {
        if ($ext -is [System.Security.Cryptography.X509Certificates.X509EnhancedKeyUsageExtension]) {
            foreach ($oid in $ext.EnhancedKeyUsages) { $eku.Add($oid.Value) }
        }
    }
    $c = New-Dict
    $c['thumbprint'] = $Cert.Thumbprint.ToUpperInvariant()
    $c['subject'] = Format-DistinguishedName $Cert.SubjectName
    $c['issuer'] = Format-DistinguishedName $Cert.IssuerName
    $c['not_before'] = $Cert.NotBefore.ToUniversalTime().ToString($iso, $inv)
    $c['not_after'] = $Cert.NotAfter.ToUniversalTime().ToString($iso, $inv)
    $c['self_signed'] = ([System.Convert]::ToBase64String($Cert.SubjectName.RawData) -eq [System.Convert]::ToBase64String($Cert.IssuerName.RawData))
    $c['eku'] = [object[]]$eku.ToArray()
    $c['cdp'] = [object[]](Get-CrlUrls $Cert)
    $c['key_file'] = ''
    if ($null -ne $Key['Path']) { $c['key_file'] = [System.IO.Path]::GetFileName([string]$Key['Path']) }
    $c['key'] = $Key['Status']
    return $c
}

function Add-CertUndo {
    # Remember a certificate (with its store properties) and its key file bytes.
    param([string]$Kind, [string]$Store, [System.Security.Cryptography.X509Certificates.X509Certificate2]$Cert, $KeyPath)
    $undo = New-Dict
    $undo['Kind'] = $Kind
    $undo['Store'] = $Store
    $undo['Cert'] = $Cert
    $undo['KeyPath'] = $KeyPath
    $undo['KeyBytes'] = $null
    if ($null -ne $KeyPath -and (Test-Path -LiteralPath $KeyPath)) { $undo['KeyBytes'] = [System.IO.File]::ReadAllBytes($KeyPath) }
    Add-Undo $undo
}

function Invoke-OpCertImport {
    # PFX (password optional) into LocalMachine\<store>, key persisted as a machine key, readable by
    # NETWORK SERVICE (S-1-5-20), the account TermService runs as.
    # https://learn.microsoft.com/en-us/dotnet/api/system.security.cryptography.x509certificates.x509keystorageflags
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $store = [string]$A['store']
    $want = ([string]$A['thumbprint']).ToUpperInvariant()
    $password = $null  # no password: Import(..., null, ...)
    if ($null -ne (Get-Arg $A 'password') -and [string]$A['password'] -ne '') { $password = [string]$A['password'] }
    $bytes = $null
    $check = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2Collection
    try {
        $bytes = [System.Convert]::FromBase64String([string]$A['pfx'])
        # First look without persisting anything (no orphan key files when nothing is added).
        $check.Import($bytes, $password, [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::MachineKeySet)
    } catch {
        Stop-Op ('cert.import: the PFX does not load ({0})' -f (Get-ErrorText $_))
    }
    $leaf = $null
    foreach ($c in $check) { if ($c.HasPrivateKey -and $null -eq $leaf) { $leaf = $c } }
    if ($null -eq $leaf) { Stop-Op 'cert.import: the PFX holds no certificate with a private key' }
    if ($leaf.Thumbprint.ToUpperInvariant() -ne $want) { Stop-Op "cert.import: the PFX's thumbprint is not the one the op names" }
    foreach ($c in $check) { $c.Reset() }
    $detail = '{0} in {1}' -f $A['thumbprint'], $store
    $st = Open-CertStore $store $true
    try {
        foreach ($c in $st.Certificates) {
            if ($c.Thumbprint.ToUpperInvariant() -eq $want) { return New-OpResult 'cert.import' $false $detail }
        }
        $flags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]'MachineKeySet, PersistKeySet'
        $coll = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2Collection
        $coll.Import($bytes, $password, $flags)
        $leaf = $null
        foreach ($c in $coll) { if ($c.Thumbprint.ToUpperInvariant() -eq $want) { $leaf = $c } }
        $key = Get-CertKey $leaf
        $undo = New-Dict
        $undo['Kind'] = 'cert-delete'
        $undo['Store'] = $store
        $undo['Thumbprint'] = $want
        $undo['KeyPath'] = $key['Path']
        Add-Undo $undo
        $st.Add($leaf)
    } finally { $st.Close() }
    if ($null -ne $key['Path']) {
        $acl = Get-Acl -LiteralPath $key['Path']
        $sid = New-Object System.Security.Principal.SecurityIdentifier 'S-1-5-20'
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($sid, 'Read', 'Allow')
        $acl.AddAccessRule($rule)
        Set-Acl -LiteralPath $key['Path'] -AclObject $acl
    }
    return New-OpResult 'cert.import' $true $detail
}

function Invoke-OpCertRemove {
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $store = [string]$A['store']
    $which = [string]$A['which']
    $removed = New-Object System.Collections.Generic.List[string]
    $st = Open-CertStore $store $false
    if ($null -ne $st) {
        $st.Close()
        $st = Open-CertStore $store $true
        try {
            foreach ($c in @($st.Certificates)) {
                $key = Get-CertKey $c
                $hit = ($which -ceq 'all') -or ($which -ceq 'unusable' -and -not (Test-CertUsable $c $key)) -or
                ($c.Thumbprint.ToUpperInvariant() -eq $which.ToUpperInvariant())
                if (-not $hit) { continue }
                Add-CertUndo 'cert-restore' $store $c $key['Path']
                $st.Remove($c)
                if ($null -ne $key['Path'] -and (Test-Path -LiteralPath $key['Path'])) { Remove-Item -LiteralPath $key['Path'] -Force }
                $removed.Add($c.Thumbprint.ToUpperInvariant())
            }
        } finally { $st.Close() }
    }
    $what = 'nothing'
    if ($removed.Count -gt 0) { $what = Format-Repr $removed.ToArray() }
    return New-OpResult 'cert.remove' ($removed.Count -gt 0) ('removed {0} from {1}' -f $what, $store)
}

function Invoke-OpMachineKeysCorrupt {
    # Lab break: overwrite each certificate's private key file with random bytes of its size.
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $n = 0
    $st = Open-CertStore ([string]$A['store']) $false
    if ($null -ne $st) {
        try {
            foreach ($c in @($st.Certificates)) {
                $key = Get-CertKey $c
                if ($key['Status'] -ne 'ok' -or $null -eq $key['Path']) { continue }
                $undo = New-Dict
                $undo['Kind'] = 'file'
                $undo['Path'] = $key['Path']
                $undo['Bytes'] = [System.IO.File]::ReadAllBytes($key['Path'])
                Add-Undo $undo
                $junk = New-Object byte[] ([Math]::Max(64, $undo['Bytes'].Length))
                (New-Object System.Security.Cryptography.RNGCryptoServiceProvider).GetBytes($junk)
                [System.IO.File]::WriteAllBytes($key['Path'], $junk)
                $n++
            }
        } finally { $st.Close() }
    }
    return New-OpResult 'machinekeys.corrupt' ($n -gt 0) ('{0} private key file(s) overwritten' -f $n)
}

function Undo-CertDelete {
    # Undo kind 'cert-delete': take out a certificate the batch added, and its key file.
    param([System.Collections.IDictionary]$U)
    $st = Open-CertStore $U['Store'] $true
    try {
        foreach ($c in @($st.Certificates)) { if ($c.Thumbprint.ToUpperInvariant() -eq $U['Thumbprint']) { $st.Remove($c) } }
    } finally { $st.Close() }
    if ($null -ne $U['KeyPath'] -and (Test-Path -LiteralPath $U['KeyPath'])) { Remove-Item -LiteralPath $U['KeyPath'] -Force }
}

function Undo-CertRestore {
    # Undo kind 'cert-restore': a removed certificate added back with its key file bytes.
    param([System.Collections.IDictionary]$U)
    if ($null -ne $U['KeyBytes']) { [System.IO.File]::WriteAllBytes($U['KeyPath'], [byte[]]$U['KeyBytes']) }
    $st = Open-CertStore $U['Store'] $true
    try { $st.Add($U['Cert']) } finally { $st.Close() }
}

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

# == network: IPv4 configuration ==================================================================
# Interfaces, their IPv4 addresses with PrefixOrigin, DHCP and the default gateway, as the twin's
# IpConfig (src/rdplab/twin/ip.py). NetTCPIP cmdlets are CDXML: every call passes -ErrorAction.
# https://learn.microsoft.com/en-us/powershell/module/nettcpip/get-netipaddress
# https://learn.microsoft.com/en-us/powershell/module/nettcpip/new-netipaddress

# BEGIN OP TABLE
$script:OpTable['ip.static'] = @{ Fn = 'Invoke-OpIpStatic'; Args = 'alias:str address:str prefix:int gateway?:str' }
$script:OpTable['ip.dhcp.lease'] = @{ Fn = 'Invoke-OpIpDhcpLease'; Args = 'alias:str address:str' }
# END OP TABLE
$script:UndoHandlers['ip'] = 'Undo-IpConfig'

function Test-Ipv4Text {
    # Python's ipaddress.IPv4Address: four decimal octets 0-255, no leading zeros.
    param([string]$Text)
    $octets = $Text.Split('.')
    if ($octets.Length -ne 4) { return $false }
    foreach ($o in $octets) {
        if ($o -notmatch '^(0|[1-9][0-9]{0,2})\z') { return $false }
        if ([int]$o -gt 255) { return $false }
    }
    return $true
}

function Get-Ipv4Number {
    # An IPv4 address as a number, for subnet arithmetic.
    param([string]$Text)
    $n = [long]0
    foreach ($o in $Text.Split('.')) { $n = $n * 256 + [long]$o }
    return $n
}

function Get-Ipv4Network {
    # Python's str(IPv4Network(address/prefix, strict=False)): "192.168.56.0/24".
    param([string]$Address, [int]$Prefix)
    $size = [long][Math]::Pow(2, 32 - $Prefix)
    $n = [long][Math]::Floor((Get-Ipv4Number $Address) / $size) * $size
    $octets = @(for ($i = 3; $i -ge 0; $i--) { [long][Math]::Floor($n / [Math]::Pow(256, $i)) % 256 })
    return ('{0}/{1}' -f ($octets -join '.'), $Prefix)
}

function Test-Ipv4InNetwork {
    # Whether Address lies in the subnet Network/Prefix.
    param([string]$Address, [string]$Network, [int]$Prefix)
    $size = [long][Math]::Pow(2, 32 - $Prefix)
    return ([Math]::Floor((Get-Ipv4Number $Address) / $size) -eq [Math]::Floor((Get-Ipv4Number $Network) / $size))
}

function Select-DefaultNextHops {
    # The next hops of an interface's IPv4 default routes (0.0.0.0/0), each once, lowest route
    # metric first; an on-link next hop (0.0.0.0) is no gateway.
    param([object[]]$Routes, [int]$Index)
    $hops = New-Object System.Collections.Generic.List[string]
    foreach ($r in @($Routes | Where-Object { [int]$_.InterfaceIndex -eq $Index } | Sort-Object -Property RouteMetric)) {
        $hop = [string]$r.NextHop
        if ($hop -ne '0.0.0.0' -and -not $hops.Contains($hop)) { $hops.Add($hop) }
    }
    return , $hops.ToArray()
}

function Get-DefaultRoutes {
    # Every IPv4 default route of the active store (what the machine routes by now). Listing all
    # IPv4 routes never comes back empty (the loopback's are among them), so no "not found" error.
    # https://learn.microsoft.com/en-us/powershell/module/nettcpip/get-netroute
    return , [object[]]@(Get-NetRoute -AddressFamily IPv4 -PolicyStore ActiveStore -ErrorAction Stop | Where-Object { [string]$_.DestinationPrefix -eq '0.0.0.0/0' })
}

function Get-IpInterfaces {
    # Every IPv4 interface but the loopback, in InterfaceIndex order, as {Index, Json}; Json is the
    # twin's Interface.to_json: alias, dhcp, the addresses whose PrefixOrigin is Dhcp or Manual
    # (WellKnown ones, such as the loopback's 127.0.0.1, are Windows' own), gateway. One read of
    # each cmdlet; all IPv4 addresses and interfaces include the loopback's, so never none.
    # https://learn.microsoft.com/en-us/powershell/module/nettcpip/get-netipinterface
    $addresses = @(Get-NetIPAddress -AddressFamily IPv4 -ErrorAction Stop)
    $routes = Get-DefaultRoutes
    $out = New-Object System.Collections.Generic.List[object]
    foreach ($nic in @(Get-NetIPInterface -AddressFamily IPv4 -ErrorAction Stop | Sort-Object -Property InterfaceIndex)) {
        $index = [int]$nic.InterfaceIndex
        $mine = @($addresses | Where-Object { [int]$_.InterfaceIndex -eq $index })
        if (@($mine | Where-Object { ([string]$_.IPAddress).StartsWith('127.') }).Count -gt 0) { continue }
        $list = New-Object System.Collections.Generic.List[object]
        foreach ($cim in $mine) {
            $origin = [string]$cim.PrefixOrigin
            if ($origin -cne 'Dhcp' -and $origin -cne 'Manual') { continue }
            $d = New-Dict
            $d['address'] = [string]$cim.IPAddress
            $d['prefix'] = [int]$cim.PrefixLength
            $d['origin'] = $origin
            $list.Add($d)
        }
        $hops = Select-DefaultNextHops $routes $index
        $json = New-Dict
        $json['alias'] = [string]$nic.InterfaceAlias
        $json['dhcp'] = ([string]$nic.Dhcp -eq 'Enabled')
        $json['addresses'] = [object[]]$list.ToArray()
        $json['gateway'] = $null
        if ($hops.Length -gt 0) { $json['gateway'] = $hops[0] }
        $entry = New-Dict
        $entry['Index'] = $index
        $entry['Json'] = $json
        $out.Add($entry)
    }
    return , $out
}

function Find-IpInterface {
    # The interface with that alias (case-insensitive, as the twin's IpConfig.find), or the op fails.
    param([string]$Op, [string]$Alias)
    foreach ($e in (Get-IpInterfaces)) { if ([string]$e['Json']['alias'] -ieq $Alias) { return $e } }
    Stop-Op ('{0}: no IPv4 interface named {1}' -f $Op, (Format-Repr $Alias))
}

function Get-IpInterfaceAt {
    # The interface with that index now, or $null.
    param([int]$Index)
    foreach ($e in (Get-IpInterfaces)) { if ([int]$e['Index'] -eq $Index) { return $e } }
    return $null
}

function Format-IpInterface {
    # The twin's Interface.describe: "DHCP 192.168.56.11/24", "static 10.0.0.5/24", "DHCP, no address".
    param([System.Collections.IDictionary]$Json)
    $kind = 'static'
    if ($Json['dhcp']) { $kind = 'DHCP' }
    $addrs = @($Json['addresses'])
    if ($addrs.Count -eq 0) { return ('{0}, no address' -f $kind) }
    return ($kind + ' ' + (@($addrs | ForEach-Object { '{0}/{1}' -f $_['address'], $_['prefix'] }) -join ', '))
}

function Test-IpStaticAlready {
    # ip.static has nothing to do: DHCP off, exactly that one Manual address, that gateway.
    param([System.Collections.IDictionary]$Json, [string]$Address, [int]$Prefix, $Gateway)
    if ($Json['dhcp']) { return $false }
    $addrs = @($Json['addresses'])
    if ($addrs.Count -ne 1) { return $false }
    $only = $addrs[0]
    if ($only['address'] -cne $Address -or [int]$only['prefix'] -ne $Prefix -or $only['origin'] -cne 'Manual') { return $false }
    return ($Json['gateway'] -ceq $Gateway)
}

function Add-IpUndo {
    param([System.Collections.IDictionary]$Entry)
    $undo = New-Dict
    $undo['Kind'] = 'ip'
    $undo['Index'] = $Entry['Index']
    $undo['Json'] = $Entry['Json']
    Add-Undo $undo
}

function Remove-Ipv4Address {
    # One address off the interface; one that Windows removed meanwhile (a DHCP lease going with
    # DHCP) is fine, any other failure stops the op.
    param([int]$Index, [string]$Address)
    try {
        Remove-NetIPAddress -InterfaceIndex $Index -IPAddress $Address -AddressFamily IPv4 -Confirm:$false -ErrorAction Stop
    } catch {
        $still = @(Get-NetIPAddress -AddressFamily IPv4 -ErrorAction Stop | Where-Object { [int]$_.InterfaceIndex -eq $Index -and [string]$_.IPAddress -eq $Address })
        if ($still.Count -gt 0) { throw }
    }
}

function Remove-DefaultRoute {
    # The interface's default route through that next hop, as Remove-Ipv4Address.
    param([int]$Index, [string]$NextHop)
    try {
        Remove-NetRoute -InterfaceIndex $Index -DestinationPrefix '0.0.0.0/0' -NextHop $NextHop -Confirm:$false -ErrorAction Stop
    } catch {
        if ((Select-DefaultNextHops (Get-DefaultRoutes) $Index) -contains $NextHop) { throw }
    }
}

function Invoke-OpIpStatic {
    # IpConfig.set_static: DHCP off, every other IPv4 address removed, the address added (in the
    # active and the persistent store), default routes through other next hops removed and the
    # gateway's route added. Without a gateway argument the current gateway is kept; one that came
    # with the DHCP lease is made again as a static route, since it goes with the lease.
    # https://learn.microsoft.com/en-us/powershell/module/nettcpip/set-netipinterface
    # https://learn.microsoft.com/en-us/powershell/module/nettcpip/remove-netipaddress
    # https://learn.microsoft.com/en-us/powershell/module/nettcpip/new-netroute
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $op = 'ip.static'
    $entry = Find-IpInterface $op ([string]$A['alias'])
    $json = $entry['Json']
    $index = [int]$entry['Index']
    $address = [string]$A['address']
    if (-not (Test-Ipv4Text $address)) { Stop-Op ('{0}: {1} is not an IPv4 address' -f $op, (Format-Repr $address)) }
    if ($A['prefix'] -lt 1 -or $A['prefix'] -gt 32) { Stop-Op ('{0}: prefix must be 1 to 32, not {1}' -f $op, $A['prefix']) }
    $prefix = [int]$A['prefix']
    $network = Get-Ipv4Network $address $prefix
    $gateway = $json['gateway']
    if ($A.Contains('gateway')) {
        $gateway = [string]$A['gateway']
        if (-not (Test-Ipv4Text $gateway)) { Stop-Op ('{0}: {1} is not an IPv4 address' -f $op, (Format-Repr $gateway)) }
    }
    if ($null -ne $gateway) {
        if (-not (Test-Ipv4InNetwork $gateway $address $prefix)) { Stop-Op ('{0}: gateway {1} is not in {2}' -f $op, $gateway, $network) }
        if ($gateway -ceq $address) { Stop-Op ('{0}: gateway {1} is the address itself' -f $op, $gateway) }
    }
    $shown = 'static {0}/{1}' -f $address, $prefix
    if ($null -ne $gateway) { $shown += ', gateway ' + $gateway }
    if (Test-IpStaticAlready $json $address $prefix $gateway) {
        return New-OpResult $op $false ('{0} already {1}' -f $json['alias'], $shown)
    }
    Add-IpUndo $entry
    if ($json['dhcp']) { Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Disabled -ErrorAction Stop }
    # Read again: what turning DHCP off left behind is removed below.
    $now = Get-IpInterfaceAt $index
    if ($null -eq $now) { Stop-Op ('{0}: interface {1} is gone' -f $op, (Format-Repr $json['alias'])) }
    $present = $false
    foreach ($have in @($now['Json']['addresses'])) {
        # ($a would be $A, the op's arguments: PowerShell variable names ignore case)
        if ($have['address'] -ceq $address -and [int]$have['prefix'] -eq $prefix -and $have['origin'] -ceq 'Manual') { $present = $true; continue }
        Remove-Ipv4Address $index $have['address']
    }
    $routed = $false
    foreach ($hop in (Select-DefaultNextHops (Get-DefaultRoutes) $index)) {
        if (-not $json['dhcp'] -and $hop -ceq $gateway) { $routed = $true; continue }
        Remove-DefaultRoute $index $hop
    }
    if (-not $present) {
        $null = New-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -IPAddress $address -PrefixLength $prefix -ErrorAction Stop
    }
    if ($null -ne $gateway -and -not $routed) {
        $null = New-NetRoute -InterfaceIndex $index -AddressFamily IPv4 -DestinationPrefix '0.0.0.0/0' -NextHop $gateway -ErrorAction Stop
    }
    return New-OpResult $op $true ('{0}: {1} (was {2})' -f $json['alias'], $shown, (Format-IpInterface $json))
}

function Invoke-OpIpDhcpLease {
    # A Windows DHCP client cannot choose the address its lease gets: on a real network the DHCP
    # server (in a lab, the router) moves it. Lab break for the twin only (ops.py), as dns.cache.seed.
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    Stop-Op ('ip.dhcp.lease: a Windows DHCP client cannot choose its lease ({0} -> {1}); the DHCP server moves it (use ip.static for a fixed address)' -f $A['alias'], $A['address'])
}

function Undo-IpConfig {
    # Undo kind 'ip': the interface's earlier IPv4 configuration. A DHCP one: unless DHCP is still
    # on (the op stopped before changing anything), the addresses and default routes now there are
    # removed and DHCP is turned on again; the address is then what the DHCP server hands out (the
    # client asks for its previous one; the twin puts it back as it was). A static one: addresses
    # and default routes it did not have are removed, and its own are made again.
    param([System.Collections.IDictionary]$U)
    $was = $U['Json']
    $index = [int]$U['Index']
    $now = Get-IpInterfaceAt $index
    if ($null -eq $now) { throw ('ip: interface {0} is gone' -f (Format-Repr $was['alias'])) }
    if ($was['dhcp']) {
        if ($now['Json']['dhcp']) { return }
        foreach ($have in @($now['Json']['addresses'])) { Remove-Ipv4Address $index $have['address'] }
        foreach ($hop in (Select-DefaultNextHops (Get-DefaultRoutes) $index)) { Remove-DefaultRoute $index $hop }
        Set-NetIPInterface -InterfaceIndex $index -AddressFamily IPv4 -Dhcp Enabled -ErrorAction Stop
        return
    }
    foreach ($have in @($now['Json']['addresses'])) {
        $kept = @(@($was['addresses']) | Where-Object { $_['address'] -ceq $have['address'] -and [int]$_['prefix'] -eq [int]$have['prefix'] }).Count -gt 0
        if (-not $kept) { Remove-Ipv4Address $index $have['address'] }
    }
    foreach ($hop in (Select-DefaultNextHops (Get-DefaultRoutes) $index)) {
        if ($hop -cne $was['gateway']) { Remove-DefaultRoute $index $hop }
    }
    $now = Get-IpInterfaceAt $index
    foreach ($old in @($was['addresses'])) {
        $there = @(@($now['Json']['addresses']) | Where-Object { $_['address'] -ceq $old['address'] }).Count -gt 0
        if (-not $there) {
            $null = New-NetIPAddress -InterfaceIndex $index -AddressFamily IPv4 -IPAddress $old['address'] -PrefixLength ([int]$old['prefix']) -ErrorAction Stop
        }
    }
    if ($null -ne $was['gateway'] -and (Select-DefaultNextHops (Get-DefaultRoutes) $index) -notcontains $was['gateway']) {
        $null = New-NetRoute -InterfaceIndex $index -AddressFamily IPv4 -DestinationPrefix '0.0.0.0/0' -NextHop $was['gateway'] -ErrorAction Stop
    }
}

function Test-IpRequested {
    # wants_ip (src/rdplab/twin/ip.py): "ip": true, or a non-empty list such as ["ipv4"].
    param([System.Collections.IDictionary]$Request)
    if (-not $Request.Contains('ip')) { return $false }
    $value = $Request['ip']
    if ($value -is [bool]) { return $value }
    if ($value -is [System.Collections.IList]) { return ($value.Count -gt 0) }
    return $false
}

function Get-FactsIp {
    # The optional ip section of Twin.gather: {"interfaces": [...]}.
    $list = New-Object System.Collections.Generic.List[object]
    foreach ($e in (Get-IpInterfaces)) { $list.Add($e['Json']) }
    $ip = New-Dict
    $ip['interfaces'] = [object[]]$list.ToArray()
    return $ip
}

# == updates: OS build, CredSSP patch level, hotfixes ============================================

# BEGIN OP TABLE
$script:OpTable['hotfix.install'] = @{ Fn = 'Invoke-OpHotfixInstall'; Args = 'kb:str source?:str' }
# END OP TABLE

function Get-FactsComputer {
    # https://learn.microsoft.com/en-us/windows/win32/cimwin32prov/win32-operatingsystem
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $ubr = Get-RegValue 'HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion' 'UBR'
    $rev = 0
    if ($null -ne $ubr) { $rev = $ubr['data'] }
    $kind = 'server'
    if ([int]$os.ProductType -eq 1) { $kind = 'client' }
    $c = New-Dict
    $c['name'] = $env:COMPUTERNAME
    $c['os_caption'] = ([string]$os.Caption).Trim()
    $c['os_build'] = '{0}.{1}' -f $os.Version, $rev
    $c['kind'] = $kind
    return $c
}

function Get-FactsCredssp {
    # tspkg.dll's file version (the CredSSP patch level, KB 4093492); Sysnative from 32-bit.
    $dir = Join-Path $env:SystemRoot 'System32'
    if ([Environment]::Is64BitOperatingSystem -and -not [Environment]::Is64BitProcess) { $dir = Join-Path $env:SystemRoot 'Sysnative' }
    $vi = [System.Diagnostics.FileVersionInfo]::GetVersionInfo((Join-Path $dir 'tspkg.dll'))
    $c = New-Dict
    $c['tspkg_version'] = '{0}.{1}.{2}.{3}' -f $vi.FileMajorPart, $vi.FileMinorPart, $vi.FileBuildPart, $vi.FilePrivatePart
    return $c
}

function Get-FactsHotfixes {
    # https://learn.microsoft.com/en-us/powershell/module/microsoft.powershell.management/get-hotfix?view=powershell-5.1
    $ids = [string[]]@(Get-HotFix | ForEach-Object { [string]$_.HotFixID } | Where-Object { $_ -ne '' })
    [System.Array]::Sort($ids, [System.StringComparer]::Ordinal)
    return , [object[]]$ids
}

function Invoke-OpHotfixInstall {
    # Add-WindowsPackage (DISM) rather than wusa.exe, which refuses remote sessions.
    # https://learn.microsoft.com/en-us/powershell/module/dism/add-windowspackage
    param([System.Collections.IDictionary]$A, [bool]$ChangedBefore)
    $kb = [string]$A['kb']
    if ((Get-FactsHotfixes) -contains $kb) { return New-OpResult 'hotfix.install' $false ('{0} already installed' -f $kb) }
    $source = [string](Get-Arg $A 'source')
    $build = (Get-FactsComputer)['os_build']
    if ($source -eq '') { Stop-Op ('hotfix.install: {0} is not installed and no source package was given (build {1})' -f $kb, $build) }
    if (-not (Test-Path -LiteralPath $source)) { Stop-Op ('hotfix.install: no package at {0}' -f $source) }
    $undo = New-Dict
    $undo['Kind'] = 'none'
    $undo['Why'] = ('{0} stays installed' -f $kb)
    Add-Undo $undo
    try {
        $pkg = Add-WindowsPackage -Online -PackagePath $source -NoRestart -ErrorAction Stop
    } catch {
        $text = Get-ErrorText $_
        if ($text -match '0x800f081e') { Stop-Op ('hotfix.install: {0} does not apply to build {1}' -f $kb, $build) }
        Stop-Op ('hotfix.install: {0} failed: {1}' -f $kb, $text)
    }
    $detail = '{0} installed; tspkg.dll {1}' -f $kb, (Get-FactsCredssp)['tspkg_version']
    if ($null -ne $pkg -and $pkg.RestartNeeded) { $detail += '; restart needed' }
    return New-OpResult 'hotfix.install' $true $detail
}

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

# == batch runner =================================================================================

function Test-OpRequest {
    # validate_op for every op before any runs; throws with the twin's message.
    param([object[]]$Ops)
    foreach ($o in $Ops) {
        $name = [string]$o['op']
        if (-not $script:OpTable.Contains($name)) {
            $known = @($script:OpTable.Keys) | Sort-Object
            Stop-Op ('unknown op {0} (known: {1})' -f (Format-Repr $name), ($known -join ', '))
        }
        $opArgs = $o['args']
        $specs = @(([string]$script:OpTable[$name]['Args']).Split(' ') | Where-Object { $_ -ne '' })
        $known = @($specs | ForEach-Object { $_.Split(':')[0].TrimEnd('?') })
        foreach ($k in $opArgs.Keys) {
            if ($known -cnotcontains $k) { Stop-Op ('op {0}: unexpected argument {1}' -f $name, (Format-Repr $k)) }
        }
        foreach ($s in $specs) {
            $argName = $s.Split(':')[0]
            $required = -not $argName.EndsWith('?')
            $argName = $argName.TrimEnd('?')
            $kinds = @($s.Split(':')[1].Split('|'))
            if (-not $opArgs.Contains($argName)) {
                if ($required) { Stop-Op ('op {0}: missing argument {1}' -f $name, (Format-Repr $argName)) }
                continue
            }
            $value = $opArgs[$argName]
            if ($value -is [bool] -and $kinds -notcontains 'bool') { Stop-Op ('op {0}: argument {1} must not be a boolean' -f $name, (Format-Repr $argName)) }
            if ($kinds -notcontains (Get-PyTypeName $value)) {
                Stop-Op ('op {0}: argument {1} has type {2}' -f $name, (Format-Repr $argName), (Get-PyTypeName $value))
            }
        }
        if ($name -eq 'reg.set' -and $script:RegTypes -cnotcontains [string]$opArgs['type']) {
            Stop-Op ("op reg.set: type {0} is not one of ('REG_SZ', 'REG_EXPAND_SZ', 'REG_DWORD', 'REG_QWORD', 'REG_MULTI_SZ', 'REG_BINARY')" -f (Format-Repr $opArgs['type']))
        }
    }
}

function Invoke-Undo {
    # One step back, by the handler its part registered; what cannot be undone is said in the
    # return value.
    param([System.Collections.IDictionary]$U)
    $kind = [string]$U['Kind']
    if ($kind -eq 'none') { return [string]$U['Why'] }
    if (-not $script:UndoHandlers.ContainsKey($kind)) { throw ('no undo handler for {0}' -f $kind) }
    $null = & $script:UndoHandlers[$kind] $U
    return ''
}

function Invoke-Batch {
    # Run the ops in order; on the first failure undo everything this batch did, newest first.
    # A change that cannot be undone (an installed update) keeps changed=true and says so.
    param([object[]]$Ops)
    Test-OpRequest $Ops
    $results = New-Object System.Collections.Generic.List[object]
    $marks = New-Object System.Collections.Generic.List[int]  # first undo entry of each result
    $script:Undo.Clear()
    $failed = $false
    $changed = $false
    foreach ($o in $Ops) {
        $name = [string]$o['op']
        $mark = $script:Undo.Count
        try {
            $r = & $script:OpTable[$name]['Fn'] $o['args'] $changed
            if ($r -isnot [System.Collections.IDictionary]) { Stop-Op ('op {0} returned no single result' -f $name) }
            if ($r['changed']) { $changed = $true }
            $results.Add($r)
            $marks.Add($mark)
        } catch {
            $message = Get-ErrorText $_
            $problems = New-Object System.Collections.Generic.List[string]
            $kept = @{}
            for ($i = $script:Undo.Count - 1; $i -ge 0; $i--) {
                try {
                    $why = Invoke-Undo $script:Undo[$i]
                    if ($why -ne '') { $kept[$i] = $why }
                } catch { $problems.Add((Get-ErrorText $_)) }
            }
            for ($j = 0; $j -lt $results.Count; $j++) {
                $end = $mark
                if ($j + 1 -lt $marks.Count) { $end = $marks[$j + 1] }
                $notes = @(for ($i = $marks[$j]; $i -lt $end; $i++) { if ($kept.ContainsKey($i)) { $kept[$i] } })
                if ($notes.Count -gt 0) {
                    $results[$j]['detail'] = $results[$j]['detail'] + ' (not rolled back: ' + ($notes -join '; ') + ')'
                } else {
                    $results[$j]['changed'] = $false
                    $results[$j]['detail'] = $results[$j]['detail'] + ' (rolled back)'
                }
            }
            if ($problems.Count -gt 0) { $message += '; rollback incomplete: ' + ($problems -join '; ') }
            $own = @(for ($i = $mark; $i -lt $script:Undo.Count; $i++) { if ($kept.ContainsKey($i)) { $kept[$i] } })
            $detail = 'rolled back the batch'
            if ($own.Count -gt 0) { $detail += '; not rolled back: ' + ($own -join '; ') }
            $bad = New-OpResult $name $false $detail
            $bad['error'] = $message
            $results.Add($bad)
            $failed = $true
            break
        }
    }
    $out = New-Dict
    $out['results'] = [object[]]$results.ToArray()
    $out['rolled_back'] = $failed
    return $out
}

# == facts ========================================================================================
# One function per section of Twin.gather (src/rdplab/twin/machine.py). Computer, CredSSP
# and hotfixes are in the updates part (hotfix.install uses them), ip in the network part.

function Get-FactsRegistry {
    param([string[]]$Keys)
    return Get-RegView $Keys
}

function Get-FactsFirewall {
    # Rules of the Remote Desktop groups, and every rule whose port covers one clients dial.
    param([int[]]$Ports)
    $profiles = New-Dict
    # https://learn.microsoft.com/en-us/powershell/module/netsecurity/get-netfirewallprofile
    foreach ($p in @(Get-NetFirewallProfile -PolicyStore ActiveStore -ErrorAction Stop)) {
        $body = New-Dict
        $body['enabled'] = ([string]$p.Enabled -ne 'False')
        $body['default_inbound'] = 'Block'
        if ([string]$p.DefaultInboundAction -eq 'Allow') { $body['default_inbound'] = 'Allow' }
        $body['default_outbound'] = 'Allow'
        if ([string]$p.DefaultOutboundAction -eq 'Block') { $body['default_outbound'] = 'Block' }
        $profiles[[string]$p.Name] = $body
    }
    $rules = New-Object System.Collections.Generic.List[object]
    foreach ($e in (Get-FwRules -Active)) {
        $r = $e['Json']
        if ($r['action'] -ne 'Allow' -and $r['action'] -ne 'Block') { continue }  # NotConfigured
        $keep = $script:RdGroups -contains $r['group']
        $portList = $r['local_port']
        if ($r['direction'] -eq 'Out') { $portList = $r['remote_port'] }
        foreach ($port in $Ports) { if (-not $keep -and (Test-PortMatch $portList $port)) { $keep = $true } }
        if ($keep) { $rules.Add($r) }
    }
    $fw = New-Dict
    $fw['active_profile'] = Get-ActiveProfile
    $fw['profiles'] = $profiles
    $fw['rules'] = [object[]]$rules.ToArray()
    return $fw
}

function Get-FactsServices {
    $out = New-Dict
    foreach ($name in $script:WatchedServices) {
        $svc = [System.ServiceProcess.ServiceController]::GetServices() | Where-Object { $_.ServiceName -eq $name }
        if ($null -eq $svc) { continue }
        $s = Get-ServiceState $name
        $body = New-Dict
        $body['status'] = $s['status']
        $body['start_type'] = $s['start_type']
        $out[$s['name']] = $body
    }
    return $out
}

function Get-FactsCertificates {
    $out = New-Dict
    foreach ($name in $script:CertStores) {
        $st = Open-CertStore $name $false
        if ($null -eq $st) { continue }
        $list = New-Object System.Collections.Generic.List[object]
        try {
            foreach ($c in @($st.Certificates)) { $list.Add((ConvertTo-CertJson $c (Get-CertKey $c))) }
        } finally { $st.Close() }
        $out[$name] = [object[]]$list.ToArray()
    }
    return $out
}

function Get-FactsDns {
    $d = New-Dict
    $d['hosts'] = Get-HostsMap
    $d['cache'] = Get-DnsCacheMap
    return $d
}

function Get-FactsProbes {
    # HEAD each URL from this machine, short timeout, no proxy; any HTTP answer counts.
    # https://learn.microsoft.com/en-us/dotnet/api/system.net.httpwebrequest.timeout
    param([string[]]$Urls)
    $out = New-Dict
    $hosts = Get-HostsMap
    # HttpWebRequest offers the TLS versions in ServicePointManager.SecurityProtocol. For
    # powershell.exe (a .NET Framework 4.5 target) its default depends on SchUseStrongCrypto and
    # may lack TLS 1.2 on Server 2016, so an https CRL would read "no answer" where Windows' own
    # revocation check succeeds: ask for TLS 1.2 and 1.1 on top of the default, for this process.
    # https://learn.microsoft.com/en-us/dotnet/api/system.net.servicepointmanager.securityprotocol
    [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12 -bor [System.Net.SecurityProtocolType]::Tls11
    foreach ($url in $Urls) {
        $probe = New-Dict
        $scheme = ''
        try { $scheme = ([System.Uri]$url).Scheme.ToLowerInvariant() } catch { $scheme = '' }
        if ($scheme -ne 'http' -and $scheme -ne 'https') {
            # An ldap:/// location names no host; the agent does not speak LDAP (not unreachable).
            $probe['reachable'] = $false
            $shown = $scheme
            if ($shown -eq '') { $shown = 'no' }
            $probe['detail'] = 'not probed: {0} scheme' -f $shown
            $out[$url] = $probe
            continue
        }
        $name = ''
        try { $name = ([System.Uri]$url).Host } catch { $name = '' }
        $lower = $name.ToLowerInvariant()
        $address = $null
        $source = 'dns'
        if ($hosts.Contains($lower)) {
            $address = $hosts[$lower]
            $source = 'hosts'
        } else {
            $cache = Get-DnsCacheMap
            if ($cache.Contains($lower)) { $source = 'cache' }
            try {
                $ips = @([System.Net.Dns]::GetHostAddresses($name))
                $v4 = @($ips | Where-Object { $_.AddressFamily -eq 'InterNetwork' })
                if ($v4.Count -gt 0) { $address = $v4[0].ToString() } elseif ($ips.Count -gt 0) { $address = $ips[0].ToString() }
            } catch { $address = $null }
        }
        if ($null -eq $address -or $name -eq '') {
            $probe['reachable'] = $false
            $probe['detail'] = '{0} does not resolve' -f $name
            $out[$url] = $probe
            continue
        }
        $ok = $false
        try {
            $req = [System.Net.WebRequest]::Create($url)
            $req.Method = 'HEAD'
            $req.Timeout = 5000
            $req.Proxy = $null
            if ($req -is [System.Net.HttpWebRequest]) {
                $req.ReadWriteTimeout = 5000
                $req.AllowAutoRedirect = $false
                $req.KeepAlive = $false
            }
            $resp = $req.GetResponse()
            $resp.Close()
            $ok = $true
        } catch {
            $ex = $_.Exception
            while ($null -ne $ex -and $ex -isnot [System.Net.WebException]) { $ex = $ex.InnerException }
            if ($null -ne $ex -and $null -ne $ex.Response) {
                $ok = $true  # an HTTP error status is still an answer
                $ex.Response.Close()
            }
        }
        $said = 'no answer'
        if ($ok) { $said = 'answered' }
        $probe['reachable'] = $ok
        $probe['detail'] = '{0} -> {1} ({2}): {3}' -f $name, $address, $source, $said
        $out[$url] = $probe
    }
    return $out
}

function Get-FactsEvents {
    # System-log events by "provider/id", newest first, as Twin.gather's optional section.
    # Level and time come from numbers, not from the translated LevelDisplayName. Get-WinEvent
    # reports "no events found" as an error (NoMatchingEventsFound): an empty answer.
    # https://learn.microsoft.com/en-us/powershell/module/microsoft.powershell.diagnostics/get-winevent?view=powershell-5.1
    param([string[]]$Wanted)
    $levels = @{ 1 = 'Critical'; 2 = 'Error'; 3 = 'Warning'; 4 = 'Information'; 5 = 'Verbose' }
    $byProvider = [ordered]@{}
    foreach ($w in $Wanted) {
        $cut = $w.LastIndexOf('/')
        if ($cut -lt 1 -or -not ($w.Substring($cut + 1) -match '^\d+$')) { Stop-Op ("events: {0} is not 'provider/id'" -f (Format-Repr $w)) }
        $provider = $w.Substring(0, $cut)
        if (-not $byProvider.Contains($provider)) { $byProvider[$provider] = New-Object System.Collections.Generic.List[int] }
        $byProvider[$provider].Add([int]$w.Substring($cut + 1))
    }
    $found = New-Object System.Collections.Generic.List[object]
    foreach ($provider in $byProvider.Keys) {
        $filter = @{ LogName = 'System'; ProviderName = $provider; Id = [int[]]$byProvider[$provider].ToArray() }
        try {
            foreach ($e in @(Get-WinEvent -FilterHashtable $filter -MaxEvents 50 -ErrorAction Stop)) { $found.Add($e) }
        } catch {
            if ([string]$_.FullyQualifiedErrorId -notlike 'NoMatchingEventsFound*') { throw }
        }
    }
    $sorted = @($found | Sort-Object -Property TimeCreated -Descending)
    $out = New-Object System.Collections.Generic.List[object]
    foreach ($e in $sorted) {
        $d = New-Dict
        $d['log'] = [string]$e.LogName
        $d['provider'] = [string]$e.ProviderName
        $d['id'] = [int]$e.Id
        $level = 'Information'
        if ($null -ne $e.Level -and $levels.ContainsKey([int]$e.Level)) { $level = $levels[[int]$e.Level] }
        $d['level'] = $level
        $d['time'] = $e.TimeCreated.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ss+00:00', [System.Globalization.CultureInfo]::InvariantCulture)
        $d['message'] = [string]$e.Message
        $out.Add($d)
    }
    return , [object[]]$out.ToArray()
}

function Get-Facts {
    # The facts document: exactly the sections of Twin.gather.
    param([System.Collections.IDictionary]$Request)
    $keys = $script:WatchedKeys
    if ($Request.Contains('keys') -and $null -ne $Request['keys']) { $keys = [string[]]@($Request['keys']) }
    $ports = New-Object System.Collections.Generic.List[int]
    $ports.Add($script:DefaultRdpPort)
    foreach ($p in $script:WebSocketPorts) { $ports.Add($p) }
    $portValue = Get-RegValue $script:RdpTcpKey 'PortNumber'
    if ($null -ne $portValue) { $ports.Add([int]$portValue['data']) }
    if ($Request.Contains('ports') -and $null -ne $Request['ports']) { foreach ($p in @($Request['ports'])) { $ports.Add([int]$p) } }
    $urls = [string[]]@()
    if ($Request.Contains('probe_urls') -and $null -ne $Request['probe_urls']) { $urls = [string[]]@($Request['probe_urls']) }
    $facts = New-Dict
    $facts['computer'] = Get-FactsComputer
    $facts['registry'] = Get-FactsRegistry $keys
    $facts['firewall'] = Get-FactsFirewall ([int[]]@($ports.ToArray() | Select-Object -Unique))
    $facts['services'] = Get-FactsServices
    $facts['certificates'] = Get-FactsCertificates
    $facts['dns'] = Get-FactsDns
    $facts['credssp'] = Get-FactsCredssp
    $facts['hotfixes'] = Get-FactsHotfixes
    $facts['probes'] = Get-FactsProbes $urls
    if ($Request.Contains('events') -and $null -ne $Request['events']) {
        $facts['events'] = Get-FactsEvents ([string[]]@($Request['events']))
    }
    if (Test-IpRequested $Request) { $facts['ip'] = Get-FactsIp }
    return $facts
}

# == main =========================================================================================

function Read-Request {
    # stdin as bytes, decoded as strict UTF-8 (a BOM is allowed): no console code page involved.
    # https://learn.microsoft.com/en-us/dotnet/api/system.console.openstandardinput
    $stdin = [Console]::OpenStandardInput()
    $buffer = New-Object System.IO.MemoryStream
    $stdin.CopyTo($buffer)
    $utf8 = New-Object System.Text.UTF8Encoding($false, $true)
    $text = ''
    try { $text = $utf8.GetString($buffer.ToArray()) } catch { throw ('request is not JSON: {0}' -f $_.Exception.Message) }
    $text = $text.TrimStart([char]0xFEFF)
    $parsed = $null
    try { $parsed = ConvertFrom-Json -InputObject $text } catch { throw ('request is not JSON: {0}' -f $_.Exception.Message) }
    if ($parsed -isnot [System.Management.Automation.PSCustomObject]) { throw 'not an rdplab agent request (protocol 1)' }
    $req = ConvertTo-PlainData $parsed
    if (-not $req.Contains('rdplab_agent') -or -not (Test-Integer $req['rdplab_agent']) -or $req['rdplab_agent'] -ne $script:Protocol) {
        throw 'not an rdplab agent request (protocol 1)'
    }
    if (-not $req.Contains('gather') -and -not $req.Contains('ops')) { throw "request has neither 'gather' nor 'ops'" }
    return $req
}

function Get-AgentVersion {
    # SHA-256 of this very file, uppercase hex (docs/agent-protocol.md).
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try { $hash = $sha.ComputeHash([System.IO.File]::ReadAllBytes($PSCommandPath)) } finally { $sha.Dispose() }
    return [System.BitConverter]::ToString($hash).Replace('-', '')
}

function Write-Answer {
    # UTF-8 without BOM straight to the stdout handle (not through the console encoding).
    param([string]$Json)
    $bytes = (New-Object System.Text.UTF8Encoding $false).GetBytes($Json)
    $stdout = [Console]::OpenStandardOutput()
    $stdout.Write($bytes, 0, $bytes.Length)
    $stdout.Flush()
}

function Write-Problem {
    param([string]$Message)
    [Console]::Error.WriteLine('rdplab agent: ' + $Message)
}

function Invoke-Main {
    $request = $null
    try { $request = Read-Request } catch {
        Write-Problem $_.Exception.Message
        return 2
    }
    # 5.1 serializes arrays wrapped in PSObject as {"value": [...], "Count": n} through the
    # System.Array type data; without it they stay JSON arrays.
    Remove-TypeData -TypeName System.Array -ErrorAction SilentlyContinue
    $answer = New-Dict
    $answer['rdplab_agent'] = $script:Protocol
    $answer['id'] = $request['id']
    $answer['agent_version'] = Get-AgentVersion
    $code = 0
    try {
        if ($request.Contains('gather')) {
            $g = $request['gather']
            if ($null -eq $g) { $g = New-Dict }
            if ($g -isnot [System.Collections.IDictionary]) { Stop-Op "'gather' must be an object" }
            $answer['facts'] = Get-Facts $g
        } else {
            $ops = $request['ops']
            if ($ops -isnot [System.Collections.IList]) { Stop-Op "'ops' must be a list" }
            $list = New-Object System.Collections.Generic.List[object]
            foreach ($o in $ops) {
                if ($o -isnot [System.Collections.IDictionary] -or -not $o.Contains('op')) { Stop-Op "every op needs 'op'" }
                $entry = New-Dict
                $entry['op'] = [string]$o['op']
                $entry['args'] = $o['args']
                if ($null -eq $entry['args']) { $entry['args'] = New-Dict }
                if ($entry['args'] -isnot [System.Collections.IDictionary]) { Stop-Op ("op {0}: 'args' must be an object" -f $entry['op']) }
                $list.Add($entry)
            }
            $batch = Invoke-Batch $list.ToArray()
            $answer['results'] = $batch['results']
            $answer['rolled_back'] = $batch['rolled_back']
            if ($batch['rolled_back']) { $code = 1 }
        }
    } catch {
        $message = Get-ErrorText $_
        $answer['error'] = $message
        Write-Problem $message
        $code = 1
    }
    try { Save-KeyMap } catch { Write-Problem ('could not save the key file map: ' + (Get-ErrorText $_)) }
    Write-Answer (ConvertTo-JsonText $answer)
    return $code
}

$script:ExitCode = 1
try {
    $script:ExitCode = [int](@(Invoke-Main)[-1])
} catch {
    Write-Problem ('internal error: ' + (Get-ErrorText $_))
    $script:ExitCode = 1
}
exit $script:ExitCode
