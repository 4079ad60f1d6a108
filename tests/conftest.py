"""Shared fixtures: the shared real-data directory, and dials-data sets that skip offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path:
    """Where the shared real data live: ``$DIALS_FACTORED_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("DIALS_FACTORED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data directory (see its README), or skip with the reason."""
    path = shared_data_path()
    if not (path / "README.md").is_file():
        pytest.skip(f"shared real data not found at {path} "
                    "(set DIALS_FACTORED_DATA to the directory holding README.md)")
    return path


class _SkippingFetcher:
    """Wraps dials_data's DataFetcher: a set that cannot be fetched skips the test."""

    def __init__(self, fetcher):
        self._fetcher = fetcher

    def __call__(self, name: str, **kwargs):
        try:
            result = self._fetcher(name, **kwargs)
        except Exception as e:  # offline: the download raises (URLError, OSError, ...)
            pytest.skip(f"dials-data set {name!r} unavailable: {e}")
        if not result:
            pytest.skip(f"dials-data set {name!r} unavailable (no network?)")
        return result


@pytest.fixture(scope="session")
def dials_data(request):
    """dials-data sets; skips (never fails) without ``--regression`` or without network.

    Overrides the dials_data pytest plugin's fixture, which fails a test when a
    download is impossible.
    """
    try:
        from dials_data.download import DataFetcher
    except ImportError:
        pytest.skip("dials_data is not installed")
    if not request.config.getoption("--regression", default=False):
        pytest.skip("test needs dials-data sets: run with --regression (and network)")
    return _SkippingFetcher(DataFetcher())
