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
