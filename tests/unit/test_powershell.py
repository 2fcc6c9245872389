"""PowerShell in the repo: it parses, it is Windows PowerShell 5.1, and agent.ps1 keeps step
with the Python side (op vocabulary, facts sections, constants) and with its review document.

No PowerShell runs here. tree-sitter-powershell parses every ``*.ps1`` of the repository; a
checker walks the tree for constructs that only PowerShell 6/7 understands, with strings and
comments masked so that text inside them never counts. The checker is itself tested on small
snippets, each of which must be flagged, and on a snippet of look-alikes that must pass.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tree_sitter
import tree_sitter_powershell

from rdplab import mslicensing
from rdplab import windows as win
from rdplab.agent import AGENT_DIR, BACKUP_DIR
from rdplab.agent.assemble import BY_NAME, PARTS, Part, closure
from rdplab.baselines import build_twin
from rdplab.ops import REG_TYPES, VOCABULARY
from rdplab.twin.firewall import ADDRESS_KEYWORDS, MATCH_KEYS, RULE_FIELDS
from rdplab.twin.ip import IpConfig
from rdplab.twin.services import START_TYPES

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "src" / "rdplab" / "agent" / "agent.ps1"
REVIEW = REPO / "docs" / "agent-review.md"
SKIP_DIRS = {".venv", ".tox", ".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}


# -- parsing ------------------------------------------------------------------------------------
@cache
def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def parse(source: bytes) -> tree_sitter.Tree:
    return parser().parse(source)


def ps1_files() -> list[Path]:
    """Every *.ps1 under the repository root, skipping virtualenvs and VCS metadata."""
    found: list[Path] = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found.extend(Path(root) / f for f in sorted(files) if f.lower().endswith(".ps1"))
    return found


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def syntax_problems(path: Path, source: bytes) -> list[str]:
    """file:line:col for every ERROR or MISSING node."""
    lines = source.decode("utf-8", "replace").splitlines()
    out = []
    for node in walk(parse(source).root_node):
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            kind = f"MISSING {node.type}" if node.is_missing else "ERROR"
            where = lines[row].strip()[:100] if row < len(lines) else ""
            out.append(f"{path}:{row + 1}:{col + 1}: {kind} near {where!r}")
    return out


PS1_FILES = ps1_files()


def test_the_glob_finds_the_agent() -> None:
    """The parse tests below cannot pass on zero files: agent.ps1 must be among them."""
    assert AGENT in PS1_FILES, f"{AGENT} not found by the *.ps1 glob of {REPO}"
    assert not [p for p in PS1_FILES if SKIP_DIRS & set(p.relative_to(REPO).parts)]


@pytest.mark.parametrize("path", PS1_FILES, ids=[str(p.relative_to(REPO)) for p in PS1_FILES])
def test_ps1_parses_without_errors(path: Path) -> None:
    problems = syntax_problems(path.relative_to(REPO), path.read_bytes())
    assert not problems, "tree-sitter-powershell cannot parse:\n" + "\n".join(problems)


def test_parse_check_reports_file_line_and_column() -> None:
    problems = syntax_problems(Path("x.ps1"), b"$a = 1\nfunction f {\n  if ($a) { 1 \n")
    assert problems
    assert all(re.match(r"x\.ps1:\d+:\d+: ", p) for p in problems)


# -- PowerShell 6/7-only constructs ------------------------------------------------------------
# Cmdlets that Windows PowerShell 5.1 does not have.
PS7_COMMANDS = {
    "get-error",
    "join-string",
    "test-json",
    "get-uptime",
    "convertfrom-markdown",
    "show-markdown",
    "get-markdownoption",
    "set-markdownoption",
    "remove-alias",
    "remove-service",
    "start-threadjob",
}
# Parameters that exist only in 6/7, per cmdlet (aliases included).
_FOREACH = {"-parallel", "-throttlelimit", "-timeoutseconds", "-asjob", "-usenewrunspace"}
_WEB = {
    "-skipcertificatecheck",
    "-skiphttperrorcheck",
    "-statuscodevariable",
    "-responseheadersvariable",
    "-authentication",
    "-token",
    "-sslprotocol",
    "-resume",
    "-form",
    "-maximumretrycount",
    "-retryintervalsec",
    "-skipheadervalidation",
    "-allowunencryptedauthentication",
}
PS7_PARAMETERS: dict[str, set[str]] = {
    "convertfrom-json": {"-ashashtable", "-depth", "-noenumerate", "-datekind"},
    "convertto-json": {"-enumsasstrings", "-asarray", "-escapehandling"},
    "foreach-object": _FOREACH,
    "%": _FOREACH,
    "foreach": _FOREACH,
    "invoke-webrequest": _WEB,
    "iwr": _WEB,
    "invoke-restmethod": _WEB,
    "irm": _WEB,
    "get-content": {"-asbytestream"},
    "set-content": {"-asbytestream"},
    "add-content": {"-asbytestream"},
    "convertfrom-securestring": {"-asplaintext"},
    "select-string": {"-raw", "-noemphasis", "-culture"},
    "split-path": {"-extension", "-leafbase"},
    "test-connection": {"-tcpport", "-traceroute", "-mtusize", "-ping", "-repeat"},
    "get-childitem": {"-followsymlink"},
    "start-process": {"-environment"},
    "join-path": {"-additionalchildpath"},
}
PS7_ENCODINGS = {"utf8nobom", "utf8bom", "ansi"}
PS7_VARIABLES = {
    "psstyle",
    "iswindows",
    "islinux",
    "ismacos",
    "iscoreclr",
    "psnativecommandargumentpassing",
    "psnativecommanduseerroractionpreference",
}
# Nodes whose text is data, not code (sub-expressions inside strings are code again).
MASKED = {"comment", "string_literal", "generic_token", "variable"}
CODE_IN_STRINGS = {"sub_expression"}


@dataclass(frozen=True)
class Finding:
    line: int
    col: int
    construct: str

    def __str__(self) -> str:
        return f"{self.line}:{self.col}: {self.construct}"


def _masked_source(root: tree_sitter.Node, source: bytes) -> bytearray:
    """The source with strings, comments, variables and bare words blanked (newlines kept)."""
    out = bytearray(source)

    def blank(start: int, end: int) -> None:
        for i in range(start, end):
            if out[i] not in b"\r\n":
                out[i] = ord(" ")

    def visit(node: tree_sitter.Node, masked: bool) -> None:
        if node.type in MASKED and not masked:
            blank(node.start_byte, node.end_byte)
            masked = True
        elif node.type in CODE_IN_STRINGS and masked:
            out[node.start_byte : node.end_byte] = source[node.start_byte : node.end_byte]
            masked = False
        elif node.type == "command_name" and text(node) in ("?", "%"):
            blank(node.start_byte, node.end_byte)  # Where-Object / ForEach-Object aliases
        for child in node.children:
            visit(child, masked)

    visit(root, False)
    return out


def _command_findings(node: tree_sitter.Node) -> Iterator[tuple[tree_sitter.Node, str]]:
    name_node = node.child_by_field_name("command_name") or next(
        (c for c in node.children if c.type == "command_name"), None
    )
    if name_node is None:
        return
    name = text(name_node).lower()
    if name in PS7_COMMANDS:
        yield name_node, f"cmdlet {text(name_node)} (PowerShell 6+)"
    elements = [
        c
        for e in node.children
        if e.type == "command_elements"
        for c in e.children
        if c.type != "command_argument_sep"
    ]
    positional = 0
    for i, element in enumerate(elements):
        if element.type == "command_parameter":
            param = text(element).split(":", 1)[0].lower()
            for only7 in PS7_PARAMETERS.get(name, set()):
                if only7 == param or (len(param) >= 4 and only7.startswith(param)):
                    yield element, f"{text(name_node)} {text(element)} (PowerShell 6+)"
            if param.startswith("-enc") and i + 1 < len(elements):
                value = text(elements[i + 1]).strip("'\"").lower()
                if value in PS7_ENCODINGS:
                    yield elements[i + 1], f"-Encoding {value} (PowerShell 6+)"
        elif i == 0 or elements[i - 1].type != "command_parameter":
            positional += 1
    if name == "join-path" and positional > 2:
        yield name_node, "Join-Path with more than two paths (PowerShell 6+)"


# Expression layers between an operator and its operand's value.
_WRAPPERS = {
    "additive_expression",
    "multiplicative_expression",
    "format_expression",
    "range_expression",
    "array_literal_expression",
    "unary_expression",
}


def _operand_has_script_block(node: tree_sitter.Node) -> bool:
    """Whether an operand is, or lists, a script block (not one nested in other code)."""
    if node.type == "script_block_expression":
        return True
    if node.type not in _WRAPPERS:
        return False
    return any(_operand_has_script_block(c) for c in node.named_children)


def ps7_constructs(source: bytes) -> list[Finding]:
    """Every construct of the source that Windows PowerShell 5.1 does not understand."""
    tree = parse(source)
    found: list[tuple[int, int, str]] = []

    def add(node: tree_sitter.Node, what: str) -> None:
        found.append((node.start_point[0] + 1, node.start_point[1] + 1, what))

    for node in walk(tree.root_node):
        if node.type == "pipeline_chain_tail":
            op = next((text(c) for c in node.children if text(c) in ("&&", "||")), "&&/||")
            add(node, f"pipeline chain operator {op} (PowerShell 7)")
        elif node.type == "command":
            for at, what in _command_findings(node):
                add(at, what)
        elif node.type == "variable":
            bare = re.sub(r"^\$(\{)?(global:|script:|env:)?", "", text(node)).rstrip("}").lower()
            if bare in PS7_VARIABLES:
                add(node, f"automatic variable {text(node)} (PowerShell 6+)")
        elif node.type == "comparison_operator" and text(node).lower().endswith("replace"):
            right = node.next_named_sibling
            if right is not None and _operand_has_script_block(right):
                add(node, "-replace with a script block substitution (PowerShell 6.1+)")

    masked = bytes(_masked_source(tree.root_node, source)).decode("utf-8", "replace")
    starts = [0] + [m.end() for m in re.finditer(r"\n", masked)]

    def position(offset: int) -> tuple[int, int]:
        row = max(i for i, s in enumerate(starts) if s <= offset)
        return row + 1, offset - starts[row] + 1

    question = {
        "??=": "null-coalescing assignment ??= (PowerShell 7)",
        "??": "null-coalescing operator ?? (PowerShell 7)",
        "?.": "null-conditional member access ?. (PowerShell 7)",
        "?[": "null-conditional index ?[ (PowerShell 7)",
        "?": "ternary operator ? : (PowerShell 7)",
    }
    for m in re.finditer(r"\?\?=|\?\?|\?\.|\?\[|\?", masked):
        found.append((*position(m.start()), question[m.group()]))
    for m in re.finditer(r"(?i)(?:^|(?<=[\s;{}]))clean\s*\{", masked):
        found.append((*position(m.start()), "clean { } block (PowerShell 7.3)"))
    for m in re.finditer(r"(?m)(?<![&|])&[ \t]*(?:;|$)", masked):
        found.append((*position(m.start()), "background operator & (PowerShell 6+)"))
    return [Finding(*f) for f in sorted(set(found))]


@pytest.mark.parametrize("path", PS1_FILES, ids=[str(p.relative_to(REPO)) for p in PS1_FILES])
def test_ps1_is_windows_powershell_51(path: Path) -> None:
    found = ps7_constructs(path.read_bytes())
    assert not found, f"{path.relative_to(REPO)} uses PowerShell 6/7-only syntax:\n" + "\n".join(
        f"{path.relative_to(REPO)}:{f}" for f in found
    )


PS7_SNIPPETS = [
    pytest.param("$a = $b ?? 'x'", "??", id="null-coalescing"),
    pytest.param("$a ??= 1", "??=", id="null-coalescing-assignment"),
    pytest.param("$n = $a?.Name", "?.", id="null-conditional-member"),
    pytest.param("$x = ${a}?[0]", "?[", id="null-conditional-index"),
    pytest.param("$x = $c ? 1 : 2", "ternary", id="ternary"),
    pytest.param("$x = ($c -eq 1) ? 'y' : 'n'", "ternary", id="ternary-parenthesized"),
    pytest.param('$s = "v: $($a ?? 1)"', "??", id="operator-inside-string-subexpression"),
    pytest.param("Get-Item x && Write-Output ok", "&&", id="pipeline-and"),
    pytest.param("Get-Item x || Write-Output no", "||", id="pipeline-or"),
    pytest.param("function f { process { 1 } clean { 2 } }", "clean", id="clean-block"),
    pytest.param("function f { clean { 2 } }", "clean", id="clean-block-alone"),
    pytest.param("1..3 | ForEach-Object -Parallel { $_ }", "-Parallel", id="foreach-parallel"),
    pytest.param("1..3 | % -Parallel { $_ } -ThrottleLimit 2", "-Parallel", id="foreach-alias"),
    pytest.param("$o = $t | ConvertFrom-Json -AsHashtable", "-AsHashtable", id="ashashtable"),
    pytest.param("$o = ConvertFrom-Json $t -AsHash", "-AsHash", id="ashashtable-abbreviated"),
    pytest.param("$o = ConvertFrom-Json $t -Depth 5", "-Depth", id="convertfrom-json-depth"),
    pytest.param("$j = ConvertTo-Json $o -EnumsAsStrings", "-EnumsAsStrings", id="enumsasstrings"),
    pytest.param("$j = ConvertTo-Json @(1) -AsArray", "-AsArray", id="asarray"),
    pytest.param("Invoke-WebRequest https://x -SkipCertificateCheck", "-Skip", id="skipcert"),
    pytest.param("Get-Error", "Get-Error", id="get-error"),
    pytest.param("'a,b' | Join-String", "Join-String", id="join-string"),
    pytest.param("$PSStyle.Reset", "$PSStyle", id="psstyle"),
    pytest.param("if ($IsWindows) { 1 }", "$IsWindows", id="iswindows"),
    pytest.param("Set-Content -Path x -Value y -Encoding utf8NoBOM", "utf8nobom", id="utf8nobom"),
    pytest.param("Start-Sleep 1 &", "background", id="background-operator"),
    pytest.param("'a' -replace 'a', { 'b' }", "-replace", id="replace-scriptblock"),
    pytest.param("Join-Path a b c", "Join-Path", id="join-path-many"),
    pytest.param("$s = Get-Content x -AsByteStream", "-AsByteStream", id="asbytestream"),
]


@pytest.mark.parametrize(("snippet", "expected"), PS7_SNIPPETS)
def test_checker_flags_powershell_7_construct(snippet: str, expected: str) -> None:
    found = ps7_constructs(snippet.encode())
    assert any(expected.lower() in f.construct.lower() for f in found), (
        f"{snippet!r} not flagged as {expected!r}: {[str(f) for f in found]}"
    )


WINDOWS_POWERSHELL_51 = r"""
# comments may say ?? ?. && || clean { } ForEach-Object -Parallel
<# block comment: $a ?? $b, $x ? 1 : 2, Get-Error #>
$ok = $?
$names = Get-ChildItem C:\Windows\a?c.dll | ? { $_.Length -gt 0 } | % { $_.Name }
$quoted = 'a ?? b && c || d ?. e ?[ f'
$expand = "x ? y : z $($names.Count) ${weird?name}"
$here = @"
clean { }  $a ?? $b  x && y
"@
$verbatim = @'
$PSStyle ? : ?.
'@
$groups = Get-Process | Group-Object -Property Name -AsHashTable
$json = ConvertTo-Json -InputObject @{ a = 1 } -Depth 20 -Compress
$obj = ConvertFrom-Json -InputObject $json
Write-Output -NoEnumerate @(1)
$x = if ($ok -and -not $quoted) { 1 } else { 2 }
$table = @{ clean = 1; parallel = 2 }
& $env:ComSpec /c exit 0
Set-Content -Path x -Value y -Encoding UTF8
1..3 | ForEach-Object -Process { $_ }
$p = Join-Path $env:TEMP 'x'
$r = 'abc' -replace 'b', 'x'
function Test-Thing {
    param($a)
    begin { }
    process { $a }
    end { }
}
"""


def test_checker_passes_windows_powershell_51_lookalikes() -> None:
    assert not syntax_problems(Path("snippet.ps1"), WINDOWS_POWERSHELL_51.encode())
    found = ps7_constructs(WINDOWS_POWERSHELL_51.encode())
    assert not found, [str(f) for f in found]


# -- cmdlets and parameters Windows PowerShell 5.1 has ----------------------------------------
PS51_DATA = REPO / "fixtures" / "ps51-cmdlets.json"  # copy of /work/shared/data/ps51-cmdlets.json
# Common parameters (not listed per cmdlet) and their aliases.
COMMON_PARAMETERS = [
    *("Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable"),
    *("WarningVariable", "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable"),
    *("WhatIf", "Confirm"),
]
COMMON_ALIASES = {"vb", "db", "ea", "wa", "infa", "ev", "wv", "iv", "ov", "ob", "pv", "wi", "cf"}
# Aliases of cmdlets that the repository's scripts use.
CMDLET_ALIASES = {"%": "foreach-object", "?": "where-object", "foreach": "foreach-object"}


@cache
def ps51_cmdlets() -> dict[str, list[str]]:
    """lower-case cmdlet name -> its documented parameters (Windows PowerShell 5.1 and the
    Windows Server 2016 modules; /work/shared/data/README.md describes the file)."""
    data = json.loads(PS51_DATA.read_text(encoding="utf-8"))
    return {name: list(body["parameters"]) for name, body in data.items()}


def defined_functions(source: bytes) -> set[str]:
    """Lower-case names of the functions a script defines."""
    return {
        text(next(c for c in n.children if c.type == "function_name")).lower()
        for n in walk(parse(source).root_node)
        if n.type == "function_statement"
    }


def ps51_call_problems(source: bytes, defined: set[str]) -> list[str]:
    """line:col for every command that is neither a 5.1 cmdlet nor in ``defined`` (lower-case
    function names), and every cmdlet parameter that is no prefix of a documented one."""
    cmdlets = ps51_cmdlets()
    out: list[str] = []
    for node in walk(parse(source).root_node):
        if node.type != "command":
            continue
        name_node = node.child_by_field_name("command_name") or next(
            (c for c in node.children if c.type == "command_name"), None
        )
        if name_node is None or text(name_node).startswith(("$", "(")):
            continue  # & $script:OpTable[...]: a function named by a table (checked elsewhere)
        name = text(name_node)
        key = CMDLET_ALIASES.get(name.lower(), name.lower())
        row, col = name_node.start_point
        where = f"{row + 1}:{col + 1}"
        if key in defined or key.endswith(".exe"):
            continue
        if key not in cmdlets:
            out.append(f"{where}: {name} is not a Windows PowerShell 5.1 cmdlet nor defined here")
            continue
        known = [p.lower() for p in cmdlets[key] + COMMON_PARAMETERS]
        for e in node.children:
            if e.type != "command_elements":
                continue
            for c in e.children:
                if c.type != "command_parameter":
                    continue
                param = text(c).split(":", 1)[0].lstrip("-").lower()
                if param in COMMON_ALIASES or any(k.startswith(param) for k in known):
                    continue
                r, k = c.start_point
                out.append(f"{r + 1}:{k + 1}: {name} has no parameter -{param}")
    return out


def agent_part_functions(part: Part) -> set[str]:
    """What a part may call: the functions of the part and of the parts it requires."""
    out: set[str] = set()
    for p in closure([part.name]):
        out |= defined_functions(p.source().encode())
    return out


def functions_allowed(path: Path) -> set[str]:
    """Functions a script may call: its own, or for an agent part those of its closure."""
    rel = path.relative_to(REPO).as_posix()
    for part in PARTS:
        if part.path == rel:
            return agent_part_functions(part)
    return defined_functions(path.read_bytes())


@pytest.mark.parametrize("path", PS1_FILES, ids=[str(p.relative_to(REPO)) for p in PS1_FILES])
def test_ps1_calls_only_ps51_cmdlets_and_parameters(path: Path) -> None:
    problems = ps51_call_problems(path.read_bytes(), functions_allowed(path))
    rel = path.relative_to(REPO)
    assert not problems, f"{rel}:\n" + "\n".join(f"{rel}:{p}" for p in problems)


# Modules whose cmdlets are CDXML (script-module functions over CIM classes): they see the
# global $ErrorActionPreference, not the calling script's 'Stop', so a failure would only be
# written to stderr (PowerShell issues 4568 and 24389). DISM is a binary module; its one call
# is held to the same rule so that no change cmdlet relies on the preference.
CDXML_MODULES = {"NetSecurity", "NetConnection", "DnsClient", "NetTCPIP", "NetAdapter", "DISM"}


@cache
def ps51_modules() -> dict[str, list[str]]:
    data = json.loads(PS51_DATA.read_text(encoding="utf-8"))
    return {name: list(body["modules"]) for name, body in data.items()}


def calls_without_error_action(source: bytes) -> list[str]:
    """line: command for every CDXML-module cmdlet called without an explicit -ErrorAction."""
    modules = ps51_modules()
    out = []
    for node in walk(parse(source).root_node):
        if node.type != "command":
            continue
        name = next((text(c) for c in node.children if c.type == "command_name"), "")
        if not CDXML_MODULES & set(modules.get(name.lower(), [])):
            continue
        params = [
            text(c).split(":", 1)[0].lower()
            for e in node.children
            if e.type == "command_elements"
            for c in e.children
            if c.type == "command_parameter"
        ]
        if not any(p in ("-erroraction", "-ea") for p in params):
            out.append(f"{node.start_point[0] + 1}: {text(node)[:100]}")
    return out


@pytest.mark.parametrize("path", PS1_FILES, ids=[str(p.relative_to(REPO)) for p in PS1_FILES])
def test_cdxml_cmdlets_are_called_with_an_error_action(path: Path) -> None:
    """issue 7 item 7: without -ErrorAction Stop a failing firewall change reports changed and
    nothing is rolled back (fixtures/contract/fw-failing-rule-change-rolls-back-batch.json)."""
    missing = calls_without_error_action(path.read_bytes())
    assert not missing, f"{path.relative_to(REPO)}:\n" + "\n".join(missing)


def test_error_action_check_finds_a_bare_cdxml_call() -> None:
    source = b"Set-NetFirewallRule -Name x -Enabled False\nClear-DnsClientCache -ea Stop\n"
    assert [m.split(":")[0] for m in calls_without_error_action(source)] == ["1"]


def test_ps51_check_flags_unknown_cmdlets_parameters_and_missing_functions() -> None:
    source = (
        b"function Get-Mine { param($a) }\n"
        b"Get-Mine -a 1\n"
        b"Get-NetFirewallRule -PolicyStore ActiveStore -ErrorAction Stop\n"
        b"$x = ConvertFrom-Json -InputObject '{}' -AsHashtable\n"
        b"Test-Json -Json '{}'\n"
        b"Get-Item x -ea SilentlyContinue | % { $_ } | ? { $_ }\n"
        b"Get-Theirs\n"
    )
    found = ps51_call_problems(source, defined_functions(source))
    assert [f.split(": ", 1)[1] for f in found] == [
        "ConvertFrom-Json has no parameter -ashashtable",
        "Test-Json is not a Windows PowerShell 5.1 cmdlet nor defined here",
        "Get-Theirs is not a Windows PowerShell 5.1 cmdlet nor defined here",
    ]


def test_the_ps51_check_covers_every_agent_part() -> None:
    checked = {p.relative_to(REPO).as_posix() for p in PS1_FILES}
    assert {p.path for p in PARTS} <= checked


@pytest.mark.parametrize("part", PARTS, ids=[p.name for p in PARTS])
def test_each_part_calls_only_what_it_requires(part: Part) -> None:
    """A part's function calls resolve in the part or the parts it requires, so every subset
    ``parts_for_ops`` returns is complete; a requirement nothing uses is reported too."""
    mine = defined_functions(part.source().encode())
    calls = {
        text(n.child_by_field_name("command_name") or n.children[0]).lower()
        for n in walk(parse(part.source().encode()).root_node)
        if n.type == "command"
    }
    everything = set().union(*(defined_functions(p.source().encode()) for p in PARTS))
    needed = (calls & everything) - mine
    allowed = agent_part_functions(part) - mine
    assert needed - allowed == set(), f"{part.path} calls functions of parts it does not require"
    for req in part.requires:
        theirs = defined_functions(BY_NAME[req].source().encode())
        assert needed & theirs, f"{part.path} requires {req} but calls nothing of it"


# -- agent.ps1 against the Python side -----------------------------------------------------------
@cache
def agent_text() -> str:
    return AGENT.read_text(encoding="utf-8")


@cache
def agent_functions() -> dict[str, tuple[int, int]]:
    """function name -> (first line, last line), 1-based."""
    out: dict[str, tuple[int, int]] = {}
    for node in walk(parse(AGENT.read_bytes()).root_node):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name")
            assert text(name) not in out, f"function {text(name)} defined twice"
            out[text(name)] = (node.start_point[0] + 1, node.end_point[0] + 1)
    return out


def op_table() -> dict[str, tuple[str, str]]:
    """The agent's dispatch table: op name -> (function, argument spec), from every part's
    ``# BEGIN OP TABLE`` ... ``# END OP TABLE`` block."""
    blocks = re.findall(r"^# BEGIN OP TABLE\n(.*?)^# END OP TABLE$", agent_text(), re.M | re.S)
    assert blocks, "agent.ps1 has no '# BEGIN OP TABLE' ... '# END OP TABLE' block"
    entry = re.compile(
        r"^\$script:OpTable\['([a-z.]+)'\] = @\{ Fn = '([A-Za-z-]+)'; Args = '([^']*)' \}$"
    )
    table: dict[str, tuple[str, str]] = {}
    for line in "".join(blocks).splitlines():
        m = entry.match(line)
        assert m, f"unreadable op table line: {line!r}"
        assert m.group(1) not in table, f"op {m.group(1)} listed twice"
        table[m.group(1)] = (m.group(2), m.group(3))
    return table


_KIND_NAMES = {str: "str", int: "int", list: "list", dict: "dict", bool: "bool"}


def test_dispatch_table_is_the_vocabulary() -> None:
    table = op_table()
    assert set(VOCABULARY) - set(table) == set(), "ops missing from agent.ps1's dispatch table"
    assert set(table) - set(VOCABULARY) == set(), "agent.ps1 dispatches ops the vocabulary lacks"


@pytest.mark.parametrize("name", sorted(VOCABULARY))
def test_dispatch_entry_matches_the_op_spec(name: str) -> None:
    fn, args = op_table()[name]
    assert fn in agent_functions(), f"{name}: function {fn} is not defined in agent.ps1"
    assert re.fullmatch(r"Invoke-Op[A-Za-z]+", fn)
    want = []
    for arg in VOCABULARY[name].args:
        kinds = arg.kind if isinstance(arg.kind, tuple) else (arg.kind,)
        optional = "" if arg.required else "?"
        want.append(f"{arg.name}{optional}:{'|'.join(_KIND_NAMES[k] for k in kinds)}")
    assert args.split() == want, f"{name}: agent.ps1 says {args!r}, ops.py says {' '.join(want)!r}"


def test_every_op_function_is_dispatched() -> None:
    dispatched = {fn for fn, _ in op_table().values()}
    defined = {f for f in agent_functions() if f.startswith("Invoke-Op")}
    assert defined == dispatched


def _twin_facts() -> dict[str, Any]:
    twin = build_twin("windows-11", "CLIENT")
    # a key event in the System log, so the optional events section has an entry
    twin.events.write(win.SCHANNEL_PROVIDER, win.EVENT_TLS_KEY_ACCESS_FAILED, "key unusable")
    # an interface with an address and a gateway, so the optional ip section has every field
    twin.ip = IpConfig.lab_default("192.168.56.10", gateway="192.168.56.1")
    return twin.gather(
        {
            "probe_urls": ["http://pki.rdplab.test/crl.crl"],
            "events": list(win.CERT_KEY_EVENTS),
            "ip": ["ipv4"],
        }
    )


def test_gather_has_every_facts_section_of_the_twin() -> None:
    body = agent_text()
    start = body.index("function Get-Facts {")
    gather = body[start : body.index("\n}\n", start)]
    sections = re.findall(r"\$facts\['([a-z_]+)'\]\s*=\s*(Get-Facts[A-Za-z]+)", gather)
    assert [s for s, _ in sections] == list(_twin_facts()), "Get-Facts sections differ"
    for section, fn in sections:
        assert fn.lower() == "get-facts" + section.lower(), f"{section} is built by {fn}"
        assert fn in agent_functions()


def test_facts_field_names_match_the_twin() -> None:
    """Every field name the twin's facts document uses is a key agent.ps1 writes."""
    facts = _twin_facts()
    rule = facts["firewall"]["rules"][0]
    profile = next(iter(facts["firewall"]["profiles"].values()))
    service = next(iter(facts["services"].values()))
    cert = facts["certificates"]["Remote Desktop"][0]
    reg_body = next(iter(facts["registry"].values()))
    reg_value = next(v for b in facts["registry"].values() for v in b["values"].values())
    probe = next(iter(facts["probes"].values()))
    event = facts["events"][0]
    interface = facts["ip"]["interfaces"][0]
    address = interface["addresses"][0]
    fields = (
        set(facts["computer"])
        | set(facts["firewall"])
        | set(rule)
        | set(profile)
        | set(service)
        | set(cert)
        | set(facts["dns"])
        | set(facts["credssp"])
        | set(reg_body)
        | set(reg_value)
        | set(probe)
        | set(event)
        | set(facts["ip"])
        | set(interface)
        | set(address)
    )
    written = set(re.findall(r"\[\s*'([a-z_]+)'\s*\]\s*=", agent_text()))
    assert fields - written == set(), "facts fields agent.ps1 never writes"
    assert set(rule) == set(RULE_FIELDS)


def _ps_value(name: str) -> str:
    m = re.search(rf"^\$script:{name} = (@\(.*?\)|[^\n]+)$", agent_text(), re.M | re.S)
    assert m, f"agent.ps1 does not set $script:{name}"
    return m.group(1)


def _ps_strings(name: str) -> list[str]:
    return re.findall(r"'([^']*)'", _ps_value(name))


def _ps_ints(name: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", _ps_value(name))]


def test_agent_constants_match_the_python_side() -> None:
    assert _ps_strings("WatchedKeys") == list(win.WATCHED_KEYS)
    assert _ps_strings("WatchedServices") == list(win.WATCHED_SERVICES)
    assert _ps_strings("RdGroups") == [win.RD_GROUP, win.RD_WS_GROUP]
    assert _ps_ints("WebSocketPorts") == list(win.WEBSOCKET_PORTS)
    assert _ps_ints("DefaultRdpPort") == [win.DEFAULT_RDP_PORT]
    assert _ps_strings("TsKey") == [win.TS_KEY]
    assert _ps_strings("RdpTcpKey") == [win.RDP_TCP_KEY]
    assert _ps_strings("MsLicensingKey") == [win.MSLICENSING_KEY]
    assert _ps_strings("AgentDir") == [AGENT_DIR]
    assert _ps_strings("BackupDir") == [BACKUP_DIR]
    assert _ps_strings("RegTypes") == list(REG_TYPES)
    assert _ps_strings("StartTypes") == list(START_TYPES)
    assert _ps_strings("RuleFields") == list(RULE_FIELDS)
    assert _ps_strings("MatchKeys") == list(MATCH_KEYS)
    assert _ps_strings("AddressKeywords") == list(ADDRESS_KEYWORDS)
    assert _ps_ints("HwidBytes") == [mslicensing.HWID_BYTES]
    assert _ps_ints("Protocol") == [1]


def test_agent_matches_the_remote_desktop_groups_by_resource_id() -> None:
    """issue 7 item 11: group names are translated, resource ids are not."""
    block = re.search(r"^\$script:RdGroupIds = \[ordered\]@\{\n(.*?)^\}", agent_text(), re.M | re.S)
    assert block, "agent.ps1 does not set $script:RdGroupIds"
    ids = dict(re.findall(r"'(@FirewallAPI\.dll,-\d+)' = '([^']+)'", block.group(1)))
    assert ids == {
        "@FirewallAPI.dll,-28752": win.RD_GROUP,
        "@FirewallAPI.dll,-28782": win.RD_WS_GROUP,
    }
    assert "$Rule.DisplayGroup" not in agent_text().replace(
        "Get-RuleGroupName ([string]$Rule.Group) ([string]$Rule.DisplayGroup)", ""
    ), "a rule's group is read from its translated DisplayGroup"


def test_agent_compares_no_translated_message_text() -> None:
    """issue 7 item 11: errors are told apart by HResult, not by English message text."""
    body = agent_text()
    assert "Keyset does not exist" not in body.replace('("Keyset does not exist" in English)', "")
    assert "Test-ErrorHResult $_ -2146893802" in body  # 0x80090016 NTE_BAD_KEYSET
    assert 0x80090016 - 2**32 == -2146893802
    for m in re.finditer(r"-(?:not)?match '([^']*)'", body):
        assert not re.search(r"[a-z]{3,} [a-z]{3,}", m.group(1)), (
            f"matches message text: {m.group()}"
        )


def test_probe_asks_for_tls12() -> None:
    """issue 7 item 10: HttpWebRequest under 5.1 offers only ServicePointManager's protocols."""
    body = agent_text()
    start = body.index("function Get-FactsProbes {")
    probes = body[start : body.index("\n}\n", start)]
    assert re.search(
        r"\[System\.Net\.ServicePointManager\]::SecurityProtocol = .*-bor "
        r"\[System\.Net\.SecurityProtocolType\]::Tls12",
        probes,
    )
    assert probes.index("SecurityProtocol =") < probes.index("WebRequest]::Create")
    assert "$scheme -ne 'http' -and $scheme -ne 'https'" in probes  # ldap: not probed


def test_agent_never_uses_dollar_input() -> None:
    """issue 7 item 14: powershell.exe -File reads redirected stdin itself only when the script
    uses $input (ConsoleHost.cs, AstSearcher.IsUsingDollarInput); Read-Request needs it unread."""
    for part in PARTS:
        tree = parse(part.source().encode())
        found = [
            n.start_point[0] + 1
            for n in walk(tree.root_node)
            if n.type == "variable" and text(n).lower() in ("$input", "${input}")
        ]
        assert not found, f"{part.path}: $input at line(s) {found}"


def test_dollar_input_check_sees_the_variable() -> None:
    tree = parse(b"$x = @($input)\n")
    assert any(n.type == "variable" and text(n) == "$input" for n in walk(tree.root_node))


def test_agent_uses_51_json_and_io_safely() -> None:
    body = agent_text()
    assert "Set-StrictMode -Version 2.0" in body
    assert "$ErrorActionPreference = 'Stop'" in body
    for call in re.findall(r"ConvertTo-Json\b[^\n]*", body):
        assert "-Depth 20" in call, f"ConvertTo-Json without -Depth 20: {call}"
    assert "Remove-TypeData -TypeName System.Array" in body
    assert "UTF8Encoding $false" in body  # stdout without BOM
    assert re.search(r"^exit \$script:ExitCode$", body, re.M)


# -- docs/agent-review.md stays pointed at the code ---------------------------------------------
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*(\d+)\s*-\s*(\d+)\s*\|", re.M)


def review_rows() -> list[tuple[str, int, int]]:
    doc = REVIEW.read_text(encoding="utf-8")
    return [(m.group(1), int(m.group(2)), int(m.group(3))) for m in _ROW.finditer(doc)]


def test_review_doc_line_ranges_point_at_what_they_name() -> None:
    lines = agent_text().splitlines()
    functions = agent_functions()
    rows = review_rows()
    assert rows, "docs/agent-review.md lists no line ranges"
    for anchor, first, last in rows:
        assert 1 <= first <= last <= len(lines), f"{anchor}: {first}-{last} is outside agent.ps1"
        assert lines[first - 1].lstrip().startswith(anchor), (
            f"docs/agent-review.md: line {first} of agent.ps1 does not start with {anchor!r}"
            f" (it is {lines[first - 1].strip()!r})"
        )
        fm = re.fullmatch(r"function ([A-Za-z0-9-]+)", anchor)
        if fm:
            real = functions[fm.group(1)]
            assert real == (first, last), (
                f"docs/agent-review.md: {anchor} is lines {real[0]}-{real[1]}, not {first}-{last}"
            )


def test_review_doc_covers_every_function_once() -> None:
    named = [a.removeprefix("function ") for a, _, _ in review_rows() if a.startswith("function ")]
    assert sorted(named) == sorted(set(named)), "a function is listed twice"
    assert set(agent_functions()) - set(named) == set(), "functions docs/agent-review.md omits"
