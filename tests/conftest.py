"Shared test setup: data folder, fixed threads, the cache of $HYBRID_BATCH_CACHE (CI gives each run a fresh one), and the --runslow flag."
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent/"shared"/"data"
if not os.environ.get("HYBRID_BATCH_DATA") and _shared.is_dir():
    os.environ["HYBRID_BATCH_DATA"] = str(_shared)
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"): return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)

@pytest.fixture(scope="session")
def data_root():
    "The data folder the tests read (HYBRID_BATCH_DATA)."
    root = os.environ.get("HYBRID_BATCH_DATA")
    if not root: pytest.fail("HYBRID_BATCH_DATA is not set and ../shared/data does not exist")
    return Path(root)
