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
