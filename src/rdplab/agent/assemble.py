"""agent.ps1 from its parts, and any subset of the parts for scripts that reuse the ops.

The agent's PowerShell lives in ``src/rdplab/agent/parts/``, one file per area:

- common: strict mode, constants, the op and undo tables, general helpers
- registry (requires common): read, write, back up, restore; reg.set, reg.delete, reg.restore
- firewall (common): NetSecurity rules; fw.rule.add, fw.rule.set, fw.rule.remove
- services (common): service state; svc.start, svc.stop, svc.restart, svc.config
- certificates (common): stores and key files; cert.import, cert.remove, machinekeys.corrupt
- dns (common): hosts file, DNS client cache; dns.flush, dns.cache.seed, hosts.set, hosts.remove
- network (common): IPv4 interfaces, addresses, DHCP, gateway; ip.static, ip.dhcp.lease
- updates (registry): OS build, tspkg.dll version, hotfixes; hotfix.install
- licensing (registry): the MSLicensing key; licensing.clear
- batch (common): validate a batch, run it, roll it back on the first failure
- facts (every area but licensing): the facts document; agent only
- main (certificates, batch, facts): read the request, answer, exit code; agent only

``PARTS`` is that order; ``agent_script()`` is ``AGENT_BANNER`` (the agent's header comment,
kept here because tree-sitter-powershell cannot parse a file of comments alone) followed by
all of them. Each part registers its own ops
(``$script:OpTable['op'] = @{ Fn = ...; Args = ... }`` between ``# BEGIN OP TABLE`` and
``# END OP TABLE``) and its own undo kinds (``$script:UndoHandlers['kind'] = 'Undo-...'``),
so an assembly of some parts dispatches and rolls back exactly the ops it carries. The
op -> part map is read from those blocks, not kept a second time here.

For a standalone script built from the same op implementations (exported remediation
scripts)::

    from rdplab.agent.assemble import assemble, parts_for_ops

    parts = parts_for_ops(["reg.set", "svc.restart"])  # common, registry, services, batch
    body = assemble(parts)  # PowerShell 5.1 text: functions plus the tables' registrations
    # then put a help block and [CmdletBinding()] param() BEFORE ``body`` and a call such as
    # ``$r = Invoke-Batch @(...)`` after it; Invoke-Batch validates, runs and rolls back.

``parts_for_ops`` raises ``KeyError`` naming an op no part implements. The parts carry no
top-level code besides assignments (``Set-StrictMode``, preference variables, constants,
table registrations, ``Add-Type``), so an assembly runs nothing until its caller does.
Each part's function calls resolve inside the part or the parts it requires
(tests/unit/test_agent_assemble.py checks it with tree-sitter), so a subset never calls a
function it lacks.

Why agent.ps1 stays a committed file, written by ``python -m rdplab.agent.assemble`` and
checked by ``--check`` (and by a test that it equals ``agent_script()``): what runs on
Windows is then a plain file a reviewer reads and diffs, the Vagrantfile uploads it as it
is, installers hash its bytes (``agent_source()``), docs/agent-review.md cites its lines,
and no build step is needed to install the package. Generating it at install time would
give none of that and save only the one command.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

AGENT_FILE = Path(__file__).resolve().parent / "agent.ps1"
PARTS_DIR = "parts"
_OP_LINE = re.compile(r"^\$script:OpTable\['([a-z.]+)'\] = ", re.M)
_OP_BLOCK = re.compile(r"^# BEGIN OP TABLE\n(.*?)^# END OP TABLE$", re.M | re.S)


@dataclass(frozen=True)
class Part:
    """One file of src/rdplab/agent/parts/ and the parts its functions call into."""

    name: str
    requires: tuple[str, ...] = ()

    @property
    def file(self) -> str:
        return f"{self.name}.ps1"

    @property
    def path(self) -> str:
        """Where the part lives in the repository (for messages and docs)."""
        return f"src/rdplab/agent/{PARTS_DIR}/{self.file}"

    def source(self) -> str:
        return _read(self.file)

    def ops(self) -> tuple[str, ...]:
        """The op names this part registers in its ``# BEGIN OP TABLE`` block, in order."""
        block = _OP_BLOCK.search(self.source())
        return tuple(_OP_LINE.findall(block.group(1))) if block else ()


_GATHERED = ("registry", "firewall", "services", "certificates", "dns", "network", "updates")
AGENT_BANNER = """\
# rdplab agent: the Windows side of the op vocabulary and the facts gathering.
#
# Windows PowerShell 5.1. Reads ONE JSON request on stdin (UTF-8) and writes ONE JSON document
# on stdout (UTF-8, no BOM). Exit codes: 0 ok, 1 an op failed and the batch was rolled back
# (or the request could not be carried out), 2 the request is unreadable (stderr only).
# Contract: docs/agent-protocol.md. Reference semantics: src/rdplab/twin/machine.py.
# Review notes (what is proven where): docs/agent-review.md.
#
# ASSEMBLED FILE, do not edit: src/rdplab/agent/parts/*.ps1 joined in the order that
# src/rdplab/agent/assemble.py declares. Edit the parts, then run
# `python -m rdplab.agent.assemble` (tests/unit/test_agent_assemble.py fails until you do).
"""
PARTS: tuple[Part, ...] = (
    Part("common"),
    Part("registry", ("common",)),
    Part("firewall", ("common",)),
    Part("services", ("common",)),
    Part("certificates", ("common",)),
    Part("dns", ("common",)),
    Part("network", ("common",)),
    Part("updates", ("registry",)),
    Part("licensing", ("registry",)),
    Part("batch", ("common",)),
    Part("facts", _GATHERED),
    Part("main", ("certificates", "batch", "facts")),
)
BY_NAME: dict[str, Part] = {p.name: p for p in PARTS}


@cache
def _read(file: str) -> str:
    return resources.files("rdplab.agent").joinpath(PARTS_DIR, file).read_text(encoding="utf-8")


def op_parts() -> dict[str, Part]:
    """op name -> the part that implements it (read from the parts' op tables)."""
    out: dict[str, Part] = {}
    for part in PARTS:
        for op in part.ops():
            if op in out:
                raise ValueError(f"op {op} is registered by {out[op].path} and {part.path}")
            out[op] = part
    return out


def closure(names: Iterable[str]) -> list[Part]:
    """The named parts and everything they require, in PARTS order."""
    want: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in want:
            want.add(name)
            todo.extend(BY_NAME[name].requires)
    return [p for p in PARTS if p.name in want]


def parts_for_ops(op_names: Iterable[str], *, batch: bool = True) -> list[Part]:
    """The parts a script running these ops needs: common helpers, each op's part and what it
    requires, and (``batch=True``) the batch runner with rollback; in PARTS order."""
    table = op_parts()
    names = ["common"] + (["batch"] if batch else [])
    for op in op_names:
        if op not in table:
            raise KeyError(
                f"no agent part implements op {op!r} (known: {', '.join(sorted(table))})"
            )
        names.append(table[op].name)
    return closure(names)


def assemble(parts: Iterable[Part]) -> str:
    """The parts' text joined in the given order, one blank line between parts."""
    return "\n".join(p.source() for p in parts)


def agent_script() -> str:
    """agent.ps1 as the parts make it."""
    return AGENT_BANNER + "\n" + assemble(PARTS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rdplab.agent.assemble",
        description="Write src/rdplab/agent/agent.ps1 from src/rdplab/agent/parts/*.ps1.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if agent.ps1 is out of date"
    )
    parser.add_argument(
        "--output", type=Path, default=AGENT_FILE, help="the file to write or check (agent.ps1)"
    )
    args = parser.parse_args(argv)
    target: Path = args.output
    want = agent_script().encode("utf-8")
    have = target.read_bytes() if target.is_file() else b""
    if args.check:
        if have != want:
            print(
                f"{target}: out of date with its parts; run python -m rdplab.agent.assemble",
                file=sys.stderr,
            )
            return 1
        print(f"{target}: up to date ({len(PARTS)} parts)")
        return 0
    if have == want:
        print(f"{target}: already up to date ({len(PARTS)} parts)")
        return 0
    try:
        target.write_bytes(want)
    except OSError as exc:
        print(f"{target}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    lines = want.count(b"\n")
    print(f"{target}: written from {len(PARTS)} parts ({lines} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
