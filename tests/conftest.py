import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


@pytest.fixture
def args():
    """The default arguments of main.py, as a worker receives them."""
    from helpers import params_from

    return params_from(["--num-processes", "2"])
