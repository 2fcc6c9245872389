"""Root conftest, kept thin: the rdplab pytest plugin (src/rdplab/plugin.py, registered
as the ``pytest11`` entry point ``rdplab``) provides the options, fixtures and reports."""

pytest_plugins = ["pytester"]  # for the plugin's own tests (tests/unit/test_plugin.py)

collect_ignore = ["reports", "benchmarks"]
