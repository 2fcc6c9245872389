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
