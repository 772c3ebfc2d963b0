import pytest


@pytest.fixture(autouse=True)
def _threads_checked(no_threads_left_behind):
    """Every test here must stop the threads it starts (tests/conftest.py)."""
    yield
