import os

import torch
from hypothesis import settings

# Small CPU machines: fewer threads than cores avoids oversubscription when tests spawn subprocesses.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile("default", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
