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
