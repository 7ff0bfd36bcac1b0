"""What the service serves: the checkpoint and how it runs, opened by the service and again by
its upload process (:class:`~skelgraph.serve.uploads.UploadProcess`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from skelgraph.serve.pose import PoseService

if TYPE_CHECKING:  # it imports torch, which the service loads in the background
    from skelgraph.serve.service import Recognition

__all__ = ["ModelSource"]


@dataclass(frozen=True)
class ModelSource:
    """The served model and how it runs (see :func:`~skelgraph.serve.create_app` for each); the
    service and its upload process each open it (:meth:`open`), so it pickles."""

    checkpoint: str
    name: str
    pose: PoseService
    input_layout: str
    device: str
    smoothing: float
    max_frames: int
    backend: str
    threads: int | None

    def open(self) -> Recognition:
        """Loads the checkpoint (setting torch's intra-op threads first, when given)."""
        # torch is imported here, in the loading thread, while the server already answers
        import torch

        from skelgraph.serve.service import Recognition, load_model

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        model, meta = load_model(self.checkpoint, self.device)
        return Recognition(
            model,
            meta,
            self.name,
            self.pose,
            input_layout=self.input_layout,
            device=self.device,
            smoothing=self.smoothing,
            max_frames=self.max_frames,
            backend=self.backend,
        )
