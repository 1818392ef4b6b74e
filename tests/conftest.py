"""Shared test fixtures: one local Ray instance for the whole session, and the data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance (2 CPUs, no dashboard), started once and shut down at the end."""
    ray = pytest.importorskip("ray")
    # workers inherit the environment: let them import the project from this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _fixture_methods():
    """The fixture methods of baselines.testing (test-constant, test-raises, ...) in the method
    registry, as a user's own methods would be: production code has no test-only path."""
    from baselines.testing import register_fixtures

    register_fixtures()


@pytest.fixture(autouse=True)
def _isolated_task_registry():
    """User tasks declared by one test's suite TOML are registered globally (so that
    ``get_task`` finds them); take them out again so that no test sees another's tasks."""
    from tasks import registry

    registry.list_tasks()  # the built-ins, registered once
    before = dict(registry._TASKS)
    yield
    registry._TASKS.clear()
    registry._TASKS.update(before)


@pytest.fixture
def data_dir() -> Path:
    """The real datasets ($EBM_BENCH_DATA); tests that need them are skipped without it."""
    value = os.environ.get("EBM_BENCH_DATA", "")
    if not value or not Path(value).is_dir():
        pytest.skip("EBM_BENCH_DATA is not set to a data folder")
    return Path(value)
