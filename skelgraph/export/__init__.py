r"""Exporting a trained model for other runtimes, and the onnxruntime backend.

A model is exported as one of two graphs (:mod:`~skelgraph.export.graphs`): its clip scores
(``joints`` :math:`(B, V, T, C)` → ``logits`` :math:`(B, K)` at the checkpoint's reduction,
batch and time dynamic), or, for a streaming model, its one-frame step as a pure function of
tensors (the frame, the frame before, the position and every key/value ring in; logits,
forecast and the rings out, batch dynamic), taken from its frame plan
(:meth:`FramePlan.functional_step <skelgraph.streaming.FramePlan.functional_step>`). Either is
written as ONNX (the dynamo exporter) or as a :class:`torch.export.ExportedProgram` ``.pt2``,
with the checkpoint's metadata (classes, layout, window, preprocessing) inside::

    from skelgraph.export import check_export, export_model
    from skelgraph.models import load_pretrained

    model, meta = load_pretrained("penn-action-fast")
    export_model(model, "step.onnx", meta=meta, frame_step=True)
    check_export("step.onnx", model, meta=meta).differences  # {"logits": 1e-6, ...}

- :mod:`~skelgraph.export.graphs`: :class:`ClipGraph`, :class:`FrameStepGraph`;
- :mod:`~skelgraph.export.formats`: :func:`export_model`, :func:`read_metadata`;
- :mod:`~skelgraph.export.runtime`: the onnxruntime backend, :class:`OnnxRuntimePlan` (a frame
  plan's interface) and :class:`OnnxRuntimeClip`, exported once into a cache folder;
- :mod:`~skelgraph.export.check`: :func:`check_export`, the exported graph against the eager
  model.

ONNX needs the optional extra ``pip install "skelgraph[onnx]"`` (onnx, onnxruntime, onnxscript).
"""

from skelgraph.export.check import ExportCheck, check_export, example_inputs
from skelgraph.export.formats import FORMATS, INSTALL_HINT, export_model, read_metadata
from skelgraph.export.graphs import ClipGraph, FrameStepGraph, export_graph
from skelgraph.export.runtime import (
    BACKENDS,
    OnnxRuntimeClip,
    OnnxRuntimePlan,
    OnnxStreamState,
    inference_session,
    onnxruntime_backend,
)

__all__ = [
    "BACKENDS",
    "FORMATS",
    "INSTALL_HINT",
    "ClipGraph",
    "ExportCheck",
    "FrameStepGraph",
    "OnnxRuntimeClip",
    "OnnxRuntimePlan",
    "OnnxStreamState",
    "check_export",
    "example_inputs",
    "export_graph",
    "export_model",
    "inference_session",
    "onnxruntime_backend",
    "read_metadata",
]
