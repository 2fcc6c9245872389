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
