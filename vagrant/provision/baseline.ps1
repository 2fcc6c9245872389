<#
.SYNOPSIS
    Put a lab machine in its healthy baseline state (Windows PowerShell 5.1).

.DESCRIPTION
    The values come from fixtures/baselines/<name>.yaml: the Vagrantfile reads the YAML
    and passes the parts this script applies as base64 JSON (-BaselineJson64), so the
    baseline file stays the one place they are written down.

      registry        REG_DWORD / REG_SZ values (fDenyTSConnections=0, RDP-Tcp PortNumber,
                      SecurityLayer, UserAuthentication, ...), each key exported to
                      C:\ProgramData\rdplab\backups before its first change
      firewall_rules  each rule's Enabled state by rule Name (locale independent): the
                      "Remote Desktop" group on, "Remote Desktop (WebSocket)" as listed
      network_category the firewall profile the baseline is active in (Private)
      services        start type and Running state (TermService, SessionEnv, ...)

    Also, outside the baseline file:
      - the Group Policy copies of the Remote Desktop and CredSSP settings must hold no
        values (rdplab.windows TS_POLICY_KEY, TS_CLIENT_POLICY_KEY, CREDSSP_KEY): values
        a box ships there are exported, then removed;
      - name resolution for the lab's names: the host serves the zone (-Zone,
        -ZoneRecords) and both machines send queries for it to -DnsServer through a Name
        Resolution Policy Table rule. The hosts file stays empty, as in the baselines,
        so the dns-stale-record fix (remove the hosts entry) leaves a name that resolves;
      - -HoldUpdates stops Windows Update (the unpatched host must stay unpatched) and
        -ExpectUnpatchedCredSSP fails the provisioning if the CredSSP update is there.

    Every step prints what it found and what it changed; a second run changes nothing.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidateSet('client', 'host')]
    [string] $Role,

    [Parameter(Mandatory = $true)]
    [string] $Address,

    [Parameter(Mandatory = $true)]
    [string] $DnsServer,

    [Parameter(Mandatory = $true)]
    [string] $BaselineJson64,

    [string] $Zone = '',

    # name=address pairs, comma separated: host=192.168.56.11,client=192.168.56.10
    [string] $ZoneRecords = '',

    [string] $LabDomain = 'rdplab.test',

    [switch] $HoldUpdates,

    [switch] $ExpectUnpatchedCredSSP
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 2.0

$BackupDir = 'C:\ProgramData\rdplab\backups'
$script:BackedUp = @{}

function Write-Step([string] $Message) {
    Write-Output ("rdplab baseline [{0}]: {1}" -f $Role, $Message)
}

function Backup-Key([string] $Key) {
    # reg export once per key and run, before the first change (the lab's backup rule)
    if ($script:BackedUp.ContainsKey($Key)) { return }
    $script:BackedUp[$Key] = $true
    if (-not (Test-Path -LiteralPath ('Registry::' + $Key))) { return }
    if (-not (Test-Path -LiteralPath $BackupDir)) {
        New-Item -ItemType Directory -Force -Path $BackupDir | Out-Null
    }
    $stamp = Get-Date -Format 'yyyyMMddHHmmss'
    $safe = ($Key -replace '[\\/:*?"<>| ]', '_')
    $file = Join-Path $BackupDir ("provision-{0}-{1}.reg" -f $stamp, $safe)
    & reg.exe export $Key $file /y | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "reg export $Key failed with exit code $LASTEXITCODE" }
    Write-Step "backed up $Key to $file"
}

function Set-RegistryValue([string] $Key, [string] $Name, [string] $Type, $Data) {
    $path = 'Registry::' + $Key
    $kind = $null
    switch ($Type) {
        'REG_DWORD' { $kind = 'DWord'; $Data = [int] $Data }
        'REG_SZ' { $kind = 'String'; $Data = [string] $Data }
        default { throw "unsupported registry type $Type for $Key\$Name" }
    }
    $current = $null
    if (Test-Path -LiteralPath $path) {
        $item = Get-ItemProperty -LiteralPath $path -Name $Name -ErrorAction SilentlyContinue
        if ($null -ne $item) { $current = $item.$Name }
    }
    if (($null -ne $current) -and ([string] $current -eq [string] $Data)) {
        Write-Step "ok $Key\$Name = $Data"
        return
    }
    Backup-Key $Key
    if (-not (Test-Path -LiteralPath $path)) { New-Item -Path $path -Force | Out-Null }
    New-ItemProperty -LiteralPath $path -Name $Name -PropertyType $kind -Value $Data -Force | Out-Null
    Write-Step "set $Key\$Name = $Data (was $current)"
}

function Clear-PolicyValues([string] $Key) {
    $path = 'Registry::' + $Key
    if (-not (Test-Path -LiteralPath $path)) {
        Write-Step "ok $Key absent"
        return
    }
    $names = @((Get-Item -LiteralPath $path).GetValueNames() | Where-Object { $_ -ne '' })
    if ($names.Count -eq 0) {
        Write-Step "ok $Key holds no values"
        return
    }
    Backup-Key $Key
    foreach ($name in $names) {
        Remove-ItemProperty -LiteralPath $path -Name $name -Force
        Write-Step "removed policy value $Key\$name"
    }
}

# -- the baseline file's part -------------------------------------------------------------
$json = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($BaselineJson64))
$spec = ConvertFrom-Json -InputObject $json
Write-Step ("applying baseline {0}" -f $spec.baseline)

foreach ($key in $spec.registry.PSObject.Properties) {
    foreach ($value in $key.Value.PSObject.Properties) {
        Set-RegistryValue -Key $key.Name -Name $value.Name -Type $value.Value.type -Data $value.Value.data
    }
}

$policyKeys = @(
    'HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services',
    'HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\Client',
    'HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System\CredSSP\Parameters'
)
foreach ($key in $policyKeys) { Clear-PolicyValues $key }

foreach ($rule in $spec.firewall_rules) {
    $found = Get-NetFirewallRule -Name $rule.name -ErrorAction SilentlyContinue
    if ($null -eq $found) {
        Write-Warning ("rdplab baseline: firewall rule {0} does not exist on this build" -f $rule.name)
        continue
    }
    $isOn = ([string] $found.Enabled -eq 'True')
    if ($isOn -eq [bool] $rule.enabled) {
        Write-Step ("ok firewall rule {0} enabled={1}" -f $rule.name, $isOn)
    } elseif ([bool] $rule.enabled) {
        Enable-NetFirewallRule -Name $rule.name -ErrorAction Stop
        Write-Step ("enabled firewall rule {0}" -f $rule.name)
    } else {
        Disable-NetFirewallRule -Name $rule.name -ErrorAction Stop
        Write-Step ("disabled firewall rule {0}" -f $rule.name)
    }
}

if ($spec.network_category) {
    foreach ($conn in @(Get-NetConnectionProfile -ErrorAction Stop)) {
        $category = [string] $conn.NetworkCategory
        if ($category -eq 'DomainAuthenticated' -or $category -eq $spec.network_category) {
            Write-Step ("ok interface {0} network category {1}" -f $conn.InterfaceAlias, $category)
            continue
        }
        Set-NetConnectionProfile -InterfaceIndex $conn.InterfaceIndex -NetworkCategory $spec.network_category -ErrorAction Stop
        Write-Step ("set interface {0} network category {1} (was {2})" -f $conn.InterfaceAlias, $spec.network_category, $category)
    }
}

$startModes = @{ 'Automatic' = 'Auto'; 'Manual' = 'Manual'; 'Disabled' = 'Disabled' }
foreach ($entry in $spec.services.PSObject.Properties) {
    $name = $entry.Name
    $want = $entry.Value
    $wmi = Get-CimInstance -ClassName Win32_Service -Filter ("Name='{0}'" -f $name)
    if ($null -eq $wmi) {
        Write-Warning ("rdplab baseline: service {0} does not exist on this build" -f $name)
        continue
    }
    $wantMode = $startModes[[string] $want.start_type]
    if ($wmi.StartMode -ne $wantMode) {
        try {
            Set-Service -Name $name -StartupType $want.start_type
            Write-Step ("set service {0} start type {1} (was {2})" -f $name, $want.start_type, $wmi.StartMode)
        } catch {
            # Some (Dnscache on current builds) refuse even administrators; report, go on.
            Write-Warning ("rdplab baseline: service {0} start type stays {1}: {2}" -f $name, $wmi.StartMode, $_.Exception.Message)
        }
    } else {
        Write-Step ("ok service {0} start type {1}" -f $name, $want.start_type)
    }
    if ($want.status -eq 'Running' -and $wmi.State -ne 'Running') {
        Start-Service -Name $name
        Write-Step ("started service {0}" -f $name)
    }
}

# -- name resolution: the lab's DNS zone ---------------------------------------------------
if ($Zone -ne '') {
    if (-not (Get-WindowsFeature -Name DNS).Installed) {
        Install-WindowsFeature -Name DNS -IncludeManagementTools | Out-Null
        Write-Step 'installed the DNS Server role'
    }
    if ($null -eq (Get-DnsServerZone -Name $Zone -ErrorAction SilentlyContinue)) {
        Add-DnsServerPrimaryZone -Name $Zone -ZoneFile ("{0}.dns" -f $Zone)
        Write-Step "created zone $Zone"
    }
    foreach ($pair in ($ZoneRecords -split ',')) {
        if ($pair.Trim() -eq '') { continue }
        $parts = $pair.Split('=')
        $name = $parts[0].Trim()
        $ip = $parts[1].Trim()
        $records = @(Get-DnsServerResourceRecord -ZoneName $Zone -Name $name -RRType A -ErrorAction SilentlyContinue)
        $current = @($records | ForEach-Object { $_.RecordData.IPv4Address.IPAddressToString })
        if (($current.Count -eq 1) -and ($current[0] -eq $ip)) {
            Write-Step "ok $name.$Zone A $ip"
            continue
        }
        foreach ($record in $records) {
            Remove-DnsServerResourceRecord -ZoneName $Zone -InputObject $record -Force
        }
        # splatted: tree-sitter-powershell misreads a parameter name with a digit (-IPv4Address)
        $recordArgs = @{ ZoneName = $Zone; Name = $name; IPv4Address = $ip }
        Add-DnsServerResourceRecordA @recordArgs
        Write-Step "set $name.$Zone A $ip (was $($current -join ' '))"
    }
}

$namespace = '.' + $LabDomain
$nrpt = @(Get-DnsClientNrptRule -ErrorAction Stop | Where-Object { $_.Namespace -contains $namespace })
$nrptOk = ($nrpt.Count -eq 1) -and (@($nrpt[0].NameServers) -join ',') -eq $DnsServer
if ($nrptOk) {
    Write-Step "ok queries for $namespace go to $DnsServer"
} else {
    foreach ($rule in $nrpt) { Remove-DnsClientNrptRule -Name $rule.Name -Force -ErrorAction Stop }
    Add-DnsClientNrptRule -Namespace $namespace -NameServers $DnsServer -ErrorAction Stop | Out-Null
    Write-Step "queries for $namespace now go to $DnsServer"
}
Clear-DnsClientCache -ErrorAction Stop
Write-Step 'flushed the DNS client cache (the baselines start with it empty)'

$here = @(Get-NetIPAddress -IPAddress $Address -ErrorAction SilentlyContinue)
if ($here.Count -eq 0) {
    # Hyper-V ignores Vagrant's private_network; see docs/vagrant.md.
    Write-Warning ("rdplab baseline: {0} is not configured on this machine; the lab expects it" -f $Address)
} else {
    Write-Step ("ok lab address {0} on {1}" -f $Address, $here[0].InterfaceAlias)
}

# -- the unpatched host (RDPLAB_HOST_VARIANT=unpatched) -----------------------------------
if ($HoldUpdates) {
    $au = 'HKLM\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU'
    Set-RegistryValue -Key $au -Name 'NoAutoUpdate' -Type 'REG_DWORD' -Data 1
    $wu = Get-Service -Name wuauserv
    if ($wu.Status -ne 'Stopped') { Stop-Service -Name wuauserv -Force }
    Set-Service -Name wuauserv -StartupType Disabled
    Write-Step 'Windows Update stopped and disabled (this host must stay unpatched)'
}

if ($ExpectUnpatchedCredSSP) {
    # The May 2018 update (KB4103723 on 1607) brings tspkg.dll 10.0.14393.2248
    # (docs/sources.md, CredSSP; /work/shared reference section 4).
    $file = Get-Item -LiteralPath (Join-Path $env:SystemRoot 'System32\tspkg.dll')
    $info = $file.VersionInfo
    $version = New-Object System.Version($info.FileMajorPart, $info.FileMinorPart, $info.FileBuildPart, $info.FilePrivatePart)
    $patched = New-Object System.Version(10, 0, 14393, 2248)
    $hotfix = Get-HotFix -Id KB4103723 -ErrorAction SilentlyContinue
    if ($version -ge $patched -or $null -ne $hotfix) {
        throw ("rdplab baseline: this host has the CredSSP update (tspkg.dll {0}); the unpatched variant needs a box from before May 2018 (RDPLAB_UNPATCHED_BOX_VERSION)" -f $version)
    }
    Write-Step ("ok CredSSP unpatched: tspkg.dll {0} < {1}" -f $version, $patched)
}

Write-Step 'done'
