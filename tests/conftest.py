import os

import pytest
import torch
from hypothesis import settings

# Small CPU machines: fewer threads than cores avoids oversubscription when tests spawn subprocesses.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile("default", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="module")
def one_thread():
    """One thread for a module's tests (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny models run
    fastest on one, the child processes the fault tests start run on one (OMP_NUM_THREADS=1), so the arithmetic is
    the same in both, and the other core is left to whatever else runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
