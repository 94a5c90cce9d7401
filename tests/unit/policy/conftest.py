import pytest

from aviator.policy import engine


@pytest.fixture(scope="session")
def policy_engine() -> engine.PolicyEngine:
    """One engine for the session, as the plane keeps one (its caches are part of what is tested)."""
    return engine.PolicyEngine()
