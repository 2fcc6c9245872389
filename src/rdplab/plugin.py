"""The rdplab pytest plugin (entry point ``pytest11: rdplab``).

Options (group "rdplab"): ``--lab-file``, ``--lab-provider``, and for the real providers
``--lab-inventory`` and ``--lab-teardown`` (docs/real-windows.md). Tests that take the
``lab_run`` fixture are parametrized over the lab file's scenarios (ids are scenario ids,
so ``-k credssp`` selects), optionally narrowed with ``@pytest.mark.lab_scenarios("healthy")``
or ``("faulted")``. Each scenario runs once per session; its tests assert different
aspects of the same run, and each report row carries that aspect's evidence.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rdplab.errors import RdplabError
from rdplab.lab import Lab, Scenario, load_lab
from rdplab.providers import Provider, get_provider
from rdplab.report import evidence_html, properties
from rdplab.report_page import matrix, section, section_head
from rdplab.scenario import ScenarioRun, run_scenario
from rdplab.workers import shard, worker_index

DEFAULT_LAB = "labs/rdp-0x904.yaml"


@dataclass
class LabSession:
    lab_file: Path
    provider_name: str
    provider_options: dict[str, object] = field(default_factory=dict)
    fix_via: str = "batch"
    _lab: Lab | None = None
    _provider: Provider | None = None
    runs: dict[str, ScenarioRun] = field(default_factory=dict)
    #: ``--lab-shard I/N``: (I, N), 1 <= I <= N
    shard: tuple[int, int] | None = None
    always_restore: bool = False
    reach_error: str | None = None

    def shard_of(self, scenarios: list[Scenario]) -> list[Scenario]:
        """Shard I of N: the scenarios at positions I-1, I-1+N, I-1+2N... of the lab file
        (deterministic; the N shards are disjoint and cover the file)."""
        return scenarios if self.shard is None else shard(scenarios, *self.shard)

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            self._lab = load_lab(self.lab_file)
        return self._lab

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            self._provider = get_provider(self.provider_name, **self.provider_options)
            if self.always_restore:
                self._provider.always_restore = True
        return self._provider

    def preflight(self) -> None:
        """Cheap checks that the lab can be reached at all, once, before anything runs
        (a pool's labs are checked without leasing one)."""
        pool = self.provider_options.get("pool")
        if pool is None:
            self.provider.preflight()
            return
        from rdplab.providers.inventory import InventoryProvider
        from rdplab.providers.pool import load_pool

        for lab in load_pool(Path(str(pool))).labs:
            InventoryProvider(lab).preflight()

    def run(self, scenario: Scenario) -> ScenarioRun:
        if self.reach_error is not None:  # the lab could not be reached: never retried
            raise RdplabError(self.reach_error)
        if scenario.id not in self.runs:
            self.runs[scenario.id] = run_scenario(self.provider, scenario, fix_via=self.fix_via)
        return self.runs[scenario.id]


LAB_SESSION = pytest.StashKey[LabSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rdplab", "rdplab: the Remote Desktop 0x904 lab")
    group.addoption(
        "--lab-file",
        default=None,
        metavar="PATH",
        help=f"lab definition to run (default: {DEFAULT_LAB} under the rootdir)",
    )
    group.addoption(
        "--lab-provider",
        default="sim",
        metavar="NAME",
        help="where the lab machines are: sim (default, in-process twins), netns (twins behind"
        " real network namespaces: root), vagrant, inventory",
    )
    group.addoption(
        "--lab-inventory",
        default=None,
        metavar="PATH",
        help="inventory of existing Windows machines for --lab-provider=inventory"
        " (default: inventory.yaml under the rootdir)",
    )
    group.addoption(
        "--lab-fix-via",
        default="batch",
        choices=("batch", "script"),
        help="real providers: run the fix phases as the agent's op batch (default) or as the"
        " exported remediation script (rdplab export), so what operations run is what the"
        " lab proved",
    )
    group.addoption(
        "--lab-pool",
        default=None,
        metavar="PATH",
        help="inventory provider: a pool file of several labs; each pytest-xdist worker"
        " leases one (docs/scale.md)",
    )
    group.addoption(
        "--lab-shard",
        default=None,
        metavar="I/N",
        help="run shard I of N of the lab file's scenarios (for CI job matrices; the N"
        " shards are disjoint and cover the file)",
    )
    group.addoption(
        "--lab-always-restore",
        action="store_true",
        default=False,
        help="restore every machine before every scenario (default: skip machines the"
        " previous scenario left at their baseline)",
    )
    group.addoption(
        "--lab-teardown",
        nargs="?",
        const="halt",
        default="none",
        choices=("none", "halt", "destroy"),
        help="vagrant: at the end of the run halt (the default when given without a value)"
        " or destroy the lab's VMs (default: none, leave them running)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: the parametrized lab suite")
    config.addinivalue_line(
        "markers",
        "lab_scenarios(kind): run only 'healthy', 'faulted' or 'routed' (a real router) scenarios",
    )
    config.addinivalue_line("markers", "lab_aspect(name): which evidence a lab test row carries")
    config.addinivalue_line("markers", "real_windows: needs a real Windows machine")
    option = config.getoption("--lab-file")
    path = Path(option) if option else Path(config.rootpath) / DEFAULT_LAB
    inventory = config.getoption("--lab-inventory")
    pool = config.getoption("--lab-pool")
    workerinput = getattr(config, "workerinput", None)
    session = config.stash[LAB_SESSION] = LabSession(
        path,
        config.getoption("--lab-provider"),
        {
            "inventory": Path(inventory) if inventory else Path(config.rootpath) / "inventory.yaml",
            "pool": Path(pool) if pool else None,
            "teardown": config.getoption("--lab-teardown"),
            "root": Path(config.rootpath),
            "worker": _worker(workerinput),
        },
        fix_via=config.getoption("--lab-fix-via"),
        shard=_shard(config.getoption("--lab-shard")),
        always_restore=config.getoption("--lab-always-restore"),
    )
    if session.fix_via == "script" and session.provider_name == "sim":
        raise pytest.UsageError(
            "rdplab: --lab-fix-via=script runs the exported PowerShell scripts and needs a real"
            " provider (vagrant, inventory); sim runs no PowerShell"
        )
    if pool and session.provider_name != "inventory":
        raise pytest.UsageError("rdplab: --lab-pool needs --lab-provider=inventory")
    workers = getattr(config.option, "numprocesses", None)
    shared = session.provider_name == "inventory" and not pool and workerinput is None
    if shared and isinstance(workers, int) and workers > 1:
        raise pytest.UsageError(
            f"rdplab: -n {workers} would run {workers} workers on the one lab of"
            f" {inventory or 'inventory.yaml'}; give each its own: --lab-pool=FILE"
            " (docs/scale.md)"
        )
    try:  # the report's Environment table (pytest-html shows pytest-metadata)
        from pytest_metadata.plugin import metadata_key

        config.stash[metadata_key]["rdplab lab file"] = str(path)
        config.stash[metadata_key]["rdplab provider"] = session.provider_name
    except (ImportError, KeyError):  # pragma: no cover - pytest-html brings pytest-metadata
        pass
    if session.provider_name in ("inventory", "vagrant") and workerinput is None:
        # A real lab is checked once, before anything runs, in the main process (under
        # pytest-xdist: the controller, which runs no test): the inventory (or every lab
        # of a pool), the credentials it names, the vagrant binary and hypervisor. A lab
        # that cannot be reached stops the run here with one line, not once per test.
        # An unknown provider still fails in the tests, with its list.
        try:
            session.preflight()
        except RdplabError as exc:
            raise pytest.UsageError(f"rdplab: {exc}") from None
    if option:
        # A lab file named on the command line is checked before anything runs, so a bad
        # one stops the run with one clear line instead of a collection traceback.
        try:
            session.lab  # noqa: B018
        except RdplabError as exc:
            raise pytest.UsageError(f"rdplab: {exc}") from None


def _worker(workerinput: dict[str, Any] | None) -> int:
    """This process's lab: pytest-xdist's worker id (gwN), else RDPLAB_WORKER or 0. Read
    from xdist's own worker input, not the environment, which a subprocess inherits."""
    env = {"RDPLAB_WORKER": os.environ.get("RDPLAB_WORKER", "")}
    if workerinput is not None:
        env["PYTEST_XDIST_WORKER"] = str(workerinput.get("workerid", ""))
    try:
        return worker_index(env)
    except RdplabError as exc:
        raise pytest.UsageError(f"rdplab: {exc}") from None


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise pytest.UsageError(
            f"rdplab: --lab-shard must be I/N with 1 <= I <= N (e.g. 2/3), got {value!r}"
        )
    return int(m.group(1)), int(m.group(2))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n N`` (``--dist load``, xdist's default for ``-n``): every test of one
    scenario goes to the same worker, so each scenario runs once, on one lab."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    session = config.stash[LAB_SESSION]
    try:
        ids = {s.id for s in session.lab.scenarios}
    except RdplabError:
        ids = set()

    class ScenarioScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            m = re.search(r"\[([^\[\]]+)\]$", nodeid)
            return f"scenario:{m.group(1)}" if m and m.group(1) in ids else nodeid

    return ScenarioScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(LAB_SESSION, None)
    if session and session._provider:
        session._provider.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash[LAB_SESSION]
    return [f"rdplab: lab file {session.lab_file}, provider {session.provider_name}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = metafunc.config.stash[LAB_SESSION]
    if "testinfra_host" in metafunc.fixturenames:
        # one Host per lab machine: client and host, and the router where the lab has one
        try:
            routed = any(s.network.router is not None for s in session.lab.scenarios)
        except RdplabError:
            routed = False
        roles = ["client", "host", *(["router"] if routed else [])]
        metafunc.parametrize("testinfra_host", roles, indirect=True)
    if "lab_scenario" not in metafunc.fixturenames:
        return
    try:
        scenarios = session.lab.scenarios
    except RdplabError as exc:
        raise pytest.UsageError(f"rdplab: {exc}") from None
    scenarios = session.shard_of(scenarios)
    marker = metafunc.definition.get_closest_marker("lab_scenarios")
    kind = marker.args[0] if marker else "all"
    if kind == "healthy":
        scenarios = [s for s in scenarios if s.healthy]
    elif kind == "faulted":
        scenarios = [s for s in scenarios if not s.healthy]
    elif kind == "routed":  # a real router to read back: the real providers only
        real = session.provider_name in ("inventory", "vagrant")
        scenarios = [s for s in scenarios if real and s.network.router is not None]
    metafunc.parametrize("lab_scenario", scenarios, ids=[s.id for s in scenarios], scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A lab test with no scenario to run here (a shard without the healthy scenario, a
    lab file without faulted ones) is deselected, not shown as pytest's empty-parameter
    skip (``[NOTSET]``)."""
    empty = [item for item in items if _without_scenario(item)]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [item for item in items if item not in empty]


def _without_scenario(item: pytest.Item) -> bool:
    if "lab_scenario" not in getattr(item, "fixturenames", ()):
        return False
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    return not isinstance(params.get("lab_scenario"), Scenario)


@pytest.fixture(scope="session")
def lab_session(pytestconfig: pytest.Config) -> LabSession:
    """The lab file, provider and the cache of scenario runs."""
    return pytestconfig.stash[LAB_SESSION]


@pytest.fixture(scope="session")
def lab_reached(request: pytest.FixtureRequest, lab_session: LabSession) -> None:
    """The lab's machines, contacted once before the first scenario (VMs brought up, a
    pool's lab leased, transports opened, agents checked). If that fails, the run stops
    there: one error naming the machine and the reason, no scenario is tried."""
    try:
        lab_session.provider.reach()
    except RdplabError as exc:
        lab_session.reach_error = exc.message
        message = f"rdplab: the lab cannot be reached: {exc.message}"
        request.session.shouldstop = message
        pytest.fail(message, pytrace=False)


@pytest.fixture
def lab_run(
    request: pytest.FixtureRequest,
    lab_session: LabSession,
    lab_scenario: Scenario,
    lab_reached: None,
) -> ScenarioRun:
    """The scenario's run (executed once per session, shared by its tests)."""
    run = lab_session.run(lab_scenario)
    request.node.stash[_RUN] = run
    return run


_RUN = pytest.StashKey[ScenarioRun]()
_PROPS: dict[int, tuple[ScenarioRun, list[tuple[str, str]]]] = {}


@pytest.fixture
def testinfra_host(request: pytest.FixtureRequest, lab_session: LabSession) -> Any:
    """A pytest-testinfra Host for each lab machine, for your own ad-hoc assertions on
    real VMs (``host.run("sc query TermService")``). Its commands go through the lab's
    own WinRM shell or SSH connection (rdplab.testinfra_hosts). Real providers only."""
    provider = lab_session.provider
    host = provider.testinfra_host(request.param)
    if host is None:
        pytest.skip(
            f"provider {provider.name} has no real {request.param} machine for testinfra"
            f" ({provider.runs_on})"
        )
    return host


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    run = item.stash.get(_RUN, None)
    if run is None or report.when != "call":
        return
    aspect_marker = item.get_closest_marker("lab_aspect")
    aspect = aspect_marker.args[0] if aspect_marker else "detect"
    props = _PROPS.get(id(run))
    if props is None or props[0] is not run:  # computed once per scenario, not per test
        props = _PROPS[id(run)] = (run, properties(run))
    item.user_properties.extend(props[1])
    if not item.config.getoption("htmlpath", None):
        return  # no HTML report (the page's only reader): no evidence, no section heads
    evidence = evidence_html(run, aspect)
    # for the page's matrix and sections (plain data: travels from xdist workers too)
    report.rdplab = {"scenario": run.scenario.id, "aspect": aspect, "evidence": evidence}
    sent = item.config.stash.setdefault(_HEADS_SENT, set())
    if run.scenario.id not in sent:
        sent.add(run.scenario.id)
        report.rdplab["head"] = section_head(run)
    try:
        from pytest_html import extras
    except ImportError:  # pragma: no cover - pytest-html is a dependency
        return
    report.extras = [*getattr(report, "extras", []), extras.html(evidence)]


#: scenarios whose section head this process already attached to a report
_HEADS_SENT = pytest.StashKey[set[str]]()


@dataclass(eq=False)  # a registered plugin object: hashed by identity
class PageParts:
    """What the report page's matrix and sections are made of, collected from the test
    reports (in the process that writes the HTML)."""

    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    evidence: dict[str, dict[str, str]] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "rdplab", None)
        if not isinstance(data, dict):
            return
        sid, aspect = data["scenario"], data["aspect"]
        self.outcomes[(sid, aspect)] = report.outcome
        self.evidence.setdefault(sid, {})[aspect] = data["evidence"]
        if "head" in data:
            self.heads.setdefault(sid, data["head"])


PAGE = pytest.StashKey[PageParts]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Collect the page's parts from every test report (also those xdist workers send)."""
    parts = session.config.stash[PAGE] = PageParts()
    session.config.pluginmanager.register(parts, "rdplab-page")


def pytest_html_results_summary(
    prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
) -> None:
    parts = session.config.stash.get(PAGE, None)
    lab = session.config.stash.get(LAB_SESSION, None)
    if parts is not None and parts.heads:
        order = [s.id for s in lab.lab.scenarios] if lab else []
        order = [s for s in order if s in parts.heads] + sorted(set(parts.heads) - set(order))
        prefix.insert(0, matrix(order, parts.outcomes))
        postfix.append(
            "<h2>Scenarios</h2>"
            + "".join(
                section(sid, parts.heads[sid], parts.evidence.get(sid, {}), parts.outcomes)
                for sid in order
            )
        )
    provider = lab._provider if lab else None
    if provider is None or provider.name == "sim":
        what = (
            "with the <code>sim</code> provider every machine is an in-process Windows twin"
            " (simulated registry, firewall, services, certificates, DNS, CredSSP, licensing)."
            " No Windows machine ran; results show the lab's logic, not a real host's"
            " behaviour."
        )
    else:
        what = (
            f"provider <code>{html.escape(provider.name)}</code>:"
            f" {html.escape(provider.runs_on)}. The connection was probed live (name"
            " resolution as the client resolves it, TCP, X.224, TLS, the host's CredSSP"
            " version); stages the probe cannot see are listed as not probed on each row."
        )
    prefix.append(f"<p><b>What ran on what:</b> {what} Each row names its provider.</p>")


def pytest_html_report_title(report: Any) -> None:
    report.title = "rdplab: Remote Desktop 0x904 lab"
