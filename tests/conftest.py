import os
import sys

# Tests import the top-level modules (datasets, genre, baselines, evaluate) directly.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest


@pytest.fixture(scope="session")
def moons_cache(tmp_path_factory):
    """One cache folder for the tests that need moons' oracle and h: fitted once per session."""
    return str(tmp_path_factory.mktemp("moons_cache"))
