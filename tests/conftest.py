from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

PENN_ACTION_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "penn_action"
MSR_ACTION3D_ROOT = PENN_ACTION_ROOT.parent / "dev" / "msr_action3d"


@pytest.fixture(scope="session")
def penn_action_root() -> Path:
    """The Penn Action annotations beside the checkout (``../shared``); skips when absent."""
    if not (PENN_ACTION_ROOT / "labels").is_dir():
        pytest.skip(f"Penn Action annotations not found at {PENN_ACTION_ROOT} (needs ../shared)")
    return PENN_ACTION_ROOT


@pytest.fixture(scope="session")
def msr_action3d_root() -> Path:
    """The MSR Action3D dev skeleton folder beside the checkout (``../shared``; ``labels.csv``
    with a ``group`` column, the subject); skips when absent."""
    if not (MSR_ACTION3D_ROOT / "labels.csv").is_file():
        pytest.skip(f"MSR Action3D dev folder not found at {MSR_ACTION3D_ROOT} (needs ../shared)")
    return MSR_ACTION3D_ROOT


@pytest.fixture(scope="session")
def penn32(penn_action_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A skeleton folder of 32 Penn Action clips, 4 of each of 8 classes, all marked train."""
    from skelgraph.data import write_skeleton_folder
    from skelgraph.data.penn_action import penn_action_files, read_penn_action

    items: list = []
    per_class: Counter = Counter()
    for path in penn_action_files(penn_action_root)[::10]:
        clip, label, _ = read_penn_action(path)
        if per_class[label] < 4 and (label in per_class or len(per_class) < 8):
            per_class[label] += 1
            items.append((clip, label, "train"))
    assert len(items) == 32
    folder = tmp_path_factory.mktemp("penn32")
    write_skeleton_folder(folder, items, progress=False)
    return folder


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
