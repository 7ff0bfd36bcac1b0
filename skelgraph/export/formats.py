r"""Writing a model's graph as an ONNX model or a :class:`torch.export.ExportedProgram` file, with
the checkpoint's metadata, and reading the metadata back."""

from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from skelgraph.export.graphs import ClipGraph, FrameStepGraph, export_graph
from skelgraph.models.base import SkeletonModel
from skelgraph.models.checkpoint import library_versions
from skelgraph.utils import PathLike, atomic_write

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "METADATA_KEY",
    "export_model",
    "exported_program",
    "graph_metadata",
    "onnx_model",
    "read_metadata",
    "require",
]

#: The file formats :func:`export_model` writes.
FORMATS = ("onnx", "exported-program")
#: The key of the metadata: an ONNX ``metadata_props`` entry, and ``<key>.json`` among the extra
#: files of an exported program.
METADATA_KEY = "skelgraph"
#: The version of the metadata's layout.
METADATA_VERSION = 1
#: How to install what exporting to ONNX and running it needs.
INSTALL_HINT = 'pip install "skelgraph[onnx]"'


def require(name: str) -> ModuleType:
    """Imports the module ``name`` (``"onnx"``, ``"onnxscript"``, ``"onnxruntime"``).

    Raises:
        ImportError: naming the module and the extra that installs it.
    """
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{name} is not installed; ONNX needs the onnx extra: {INSTALL_HINT}"
        ) from e


def graph_metadata(
    graph: ClipGraph | FrameStepGraph, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What an exported file carries besides its graph, as plain JSON values: ``kind``
    (``"clip"`` or ``"frame_step"``), ``reduce`` (the clip graph's reduction, :obj:`None` for
    the model's own or a frame step), the shapes of its ``inputs``
    and ``outputs`` (``"batch"``, ``"time"`` for the dynamic axes), the library ``versions`` it was
    exported with, and the checkpoint's ``meta`` (classes, layout, window, preprocessing,
    inference settings; :obj:`None` when not given), so that a runtime applies the same
    preprocessing."""
    metadata: dict[str, Any] = {
        "version": METADATA_VERSION,
        "kind": graph.kind,
        "reduce": getattr(graph, "reduce", None),
        **graph.signature(),
        "versions": library_versions(),
        "meta": None if meta is None else dict(meta),
    }
    json.dumps(metadata, default=_not_json)  # refuse what JSON cannot hold before exporting
    return metadata


def exported_program(graph: ClipGraph | FrameStepGraph) -> torch.export.ExportedProgram:
    """``graph`` traced by :func:`torch.export.export` with its dynamic axes."""
    with torch.no_grad():
        return torch.export.export(
            graph, graph.example_inputs(), dynamic_shapes=_dynamic(graph.dynamic_shapes())
        )


def onnx_model(graph: ClipGraph | FrameStepGraph, metadata: Mapping[str, Any]) -> Any:
    """``graph`` as an ONNX ``ModelProto`` (the dynamo exporter, optimised), its inputs and
    outputs and their dynamic axes named as the graph names them and ``metadata`` as JSON in
    its ``metadata_props`` under :data:`METADATA_KEY`.

    Raises:
        ImportError: without onnx or onnxscript.
    """
    require("onnx")
    require("onnxscript")
    with torch.no_grad(), warnings.catch_warnings():
        # every input's batch axis is one: the exporter says it keeps the name once
        warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used")
        program = torch.onnx.export(
            graph,
            graph.example_inputs(),
            dynamic_shapes=graph.dynamic_shapes(),
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=_not_json)
    return proto


def export_model(
    model: SkeletonModel,
    out: PathLike,
    *,
    meta: Mapping[str, Any] | None = None,
    format: str = "onnx",
    frame_step: bool = False,
) -> dict[str, Any]:
    r"""Exports ``model`` to the file ``out``, written atomically (nothing is left there when
    exporting fails).

    Without ``frame_step`` the graph is the model's clip scores
    (:class:`~skelgraph.export.graphs.ClipGraph`: ``joints`` :math:`(B, V, T, C)` →
    ``logits`` :math:`(B, K)`, batch and time dynamic) at the checkpoint's reduction
    (``meta["inference"]["reduce"]``, else the model's own); with it, the one-frame step of a
    streaming model (:class:`~skelgraph.export.graphs.FrameStepGraph`, batch dynamic).

    Args:
        model (SkeletonModel): the model (put in evaluation mode).
        out (str or os.PathLike): the file (``.onnx``, ``.pt2``).
        meta (Mapping, optional): the checkpoint's meta, stored with the graph
            (:func:`graph_metadata`).
        format (str, optional): ``"onnx"`` (the dynamo exporter, an ONNX model with the metadata
            in its ``metadata_props``) or ``"exported-program"`` (:func:`torch.export.save`, the
            metadata as the extra file ``skelgraph.json``). (default: ``"onnx"``)
        frame_step (bool, optional): export the frame step instead of the clip scores.
            (default: :obj:`False`)

    Returns:
        dict: the metadata written with the graph.

    Raises:
        ValueError: for an unknown format, a frame step of a model that cannot stream through a
            frame plan, or a missing output folder.
        ImportError: for ONNX without onnx or onnxscript.
    """
    if format not in FORMATS:
        raise ValueError(f"export: format: expected one of {FORMATS}, got {format!r}")
    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(f"export: {out}: folder {out.parent} does not exist")
    if format == "onnx":
        require("onnx")
        require("onnxscript")
    reduce = None if meta is None else (meta.get("inference") or {}).get("reduce")
    graph = export_graph(model, frame_step=frame_step, reduce=reduce)
    metadata = graph_metadata(graph, meta)
    if format == "onnx":
        data = onnx_model(graph, metadata).SerializeToString()
        with atomic_write(out) as f:
            f.write(data)
    else:
        program = exported_program(graph)
        extra = {f"{METADATA_KEY}.json": json.dumps(metadata, default=_not_json)}
        with atomic_write(out) as f, warnings.catch_warnings():
            # constants that are slices of a weight (a frame plan's) are saved as they are
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            torch.export.save(program, f, extra_files=extra)
    return metadata


def file_format(path: PathLike) -> str:
    """``"exported-program"`` for a ``.pt2`` archive (a zip file), else ``"onnx"``."""
    return "exported-program" if zipfile.is_zipfile(path) else "onnx"


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata :func:`export_model` wrote with the graph in ``path`` (ONNX or exported
    program; see :func:`graph_metadata`).

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file carries no skelgraph metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if file_format(path) == "exported-program":
        extra = {f"{METADATA_KEY}.json": ""}
        torch.export.load(path, extra_files=extra)
        text = extra[f"{METADATA_KEY}.json"]
    else:
        onnx = require("onnx")
        proto = onnx.load(str(path), load_external_data=False)
        text = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), "")
    if not text:
        raise ValueError(f"{path}: expected a graph exported by skelgraph, found no metadata")
    return json.loads(text)


def _dynamic(axes: Any) -> Any:
    """The named dynamic axes of :meth:`ClipGraph.dynamic_shapes` (a dict per input, tuples of
    them) as :func:`torch.export.export` takes them, each :attr:`torch.export.Dim.DYNAMIC`."""
    if isinstance(axes, dict):
        return dict.fromkeys(axes, torch.export.Dim.DYNAMIC)
    return tuple(_dynamic(inner) for inner in axes)


def _not_json(value: Any) -> Any:
    raise TypeError(
        f"export: metadata: expected plain JSON values, got {type(value).__name__} {value!r:.80}"
    )
