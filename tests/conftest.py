"""Shared test set-up: one torch thread (tests run beside each other on 2 cores) and the
path of the real data set, which tests skip without."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("WPAUC_TEST_THREADS", "1")))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WPAUC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
AMAZON18_MINIONEREC = SHARED_DATA / "amazon18-minionerec"


@pytest.fixture
def amazon18_dir() -> Path:
    """The real MiniOneRec-layout Amazon 2018 data; skips the test when absent."""
    if not AMAZON18_MINIONEREC.is_dir():
        pytest.skip(f"real data not found at {AMAZON18_MINIONEREC}")
    return AMAZON18_MINIONEREC
