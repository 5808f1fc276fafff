"""Shared fixtures: the real data beside the repo and a folder for test artefacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SYNTHSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("SYNTHSEG_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real medical images in ../shared/data (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where GUI tests save screenshots for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lidc(shared_data) -> Path:
    """The shared LIDC nodule table (``ct/lidc_nodules/index.csv``; skips when absent)."""
    folder = shared_data / "ct" / "lidc_nodules"
    if not (folder / "index.csv").is_file():
        pytest.skip("the LIDC nodule table is not in the shared data")
    return folder
