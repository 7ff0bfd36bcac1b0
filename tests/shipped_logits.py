"""Logits of the shipped checkpoints on the shipped example clips, and the reference file.

``tests/data/shipped_logits.npz`` holds, for every packaged checkpoint, the full-forward
``ModelOutput.logits`` :math:`(N, T, K)` (float32) of the Penn Action example clips, sampled as
``skelgraph test`` samples them (the checkpoint's window, preprocessing and evaluation crop), with
the CPU capability they were computed under. ``test_shipped_checkpoints.py`` recomputes them with
:func:`shipped_logits` and compares. Regenerate the file only when a change of the logits is
intended::

    PYTHONPATH=. python tests/shipped_logits.py
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from skelgraph import SkeletonClip
from skelgraph.data import example_clips, make_loader, to_dense, write_skeleton_folder
from skelgraph.models import load_pretrained
from skelgraph.train.checkpoint_data import checkpoint_folder

#: The reference logits, written by running this module.
REFERENCE = Path(__file__).resolve().parent / "data" / "shipped_logits.npz"
#: The packaged checkpoints the reference covers.
SHIPPED = ("penn-action", "penn-action-fast")


@contextmanager
def one_thread() -> Iterator[None]:
    """Runs torch on one thread: a parallel reduction splits its sums by the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shipped_logits(name: str, folder: Path) -> tuple[list[str], torch.Tensor]:
    """The example clips' classes and the packaged checkpoint ``name``'s logits :math:`(N, T, K)`
    on them, one batch through the full forward; ``folder`` receives the clips and the cache."""
    model, meta = load_pretrained(name)
    clips = [SkeletonClip.load(p) for p in example_clips("penn_action")]
    root = folder / "clips"
    write_skeleton_folder(root, [(c, str(c.label), "test") for c in clips], progress=False)
    dataset = checkpoint_folder(root, meta, cache_dir=folder / "cache")
    (batch,) = make_loader(dataset, len(dataset), shuffle=False)
    x, mask = to_dense(batch)
    with one_thread(), torch.inference_mode():
        logits = model(x, mask).logits.float()
    return [dataset.classes[y] for y in batch.y.tolist()], logits


#: Tolerance against the reference under other CPU kernels (AVX2 against AVX-512, say), which round
#: the sums of a causal 32-step rollout differently: up to 8.7e-5 on logits of about 2 was seen.
OTHER_KERNELS_TOLERANCE = 2e-4


def assert_reference_logits(name: str, classes: list[str], logits: torch.Tensor) -> None:
    """``classes`` and ``logits`` (from :func:`shipped_logits`) equal the reference of ``name``: bit
    for bit under the CPU kernels the reference was computed with, within
    :data:`OTHER_KERNELS_TOLERANCE` under others."""
    with np.load(REFERENCE) as reference:
        expected = torch.from_numpy(reference[f"{name}/logits"])
        assert classes == reference[f"{name}/classes"].tolist()
        capability = str(reference["cpu_capability"])
    assert logits.shape == expected.shape
    if capability == torch.backends.cpu.get_cpu_capability():
        assert torch.equal(logits, expected)
    else:
        torch.testing.assert_close(
            logits, expected, atol=OTHER_KERNELS_TOLERANCE, rtol=OTHER_KERNELS_TOLERANCE
        )


def main() -> None:
    arrays: dict[str, np.ndarray] = {
        "cpu_capability": np.array(torch.backends.cpu.get_cpu_capability())
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in SHIPPED:
            classes, logits = shipped_logits(name, Path(tmp) / name)
            arrays[f"{name}/classes"] = np.array(classes)
            arrays[f"{name}/logits"] = logits.numpy()
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **arrays)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
