import os

import pytest

# Keep runs deterministic and light on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np

    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(2)
    except ImportError:
        pass
