from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

PENN_ACTION_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "penn_action"


@pytest.fixture(scope="session")
def penn_action_root() -> Path:
    """The Penn Action annotations beside the checkout (``../shared``); skips when absent."""
    if not (PENN_ACTION_ROOT / "labels").is_dir():
        pytest.skip(f"Penn Action annotations not found at {PENN_ACTION_ROOT} (needs ../shared)")
    return PENN_ACTION_ROOT


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Datasets built by tests cache into a temporary folder, never the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a busy 2-core machine two threads stall at every OpenMP barrier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
