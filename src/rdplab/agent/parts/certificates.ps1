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
