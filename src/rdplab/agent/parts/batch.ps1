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
