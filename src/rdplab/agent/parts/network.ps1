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
