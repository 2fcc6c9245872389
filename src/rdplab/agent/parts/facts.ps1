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
