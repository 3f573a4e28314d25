"""Let `pytest benchmarks/ --benchmark-only` run although pyproject's addopts disables benchmarks
for the default test run (pytest-benchmark refuses the two options together)."""
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if getattr(config.option, "benchmark_only", False):
        config.option.benchmark_disable = False
