"""The ``config`` every registered model records for a set of constructor calls, and its
reference file.

``tests/data/model_configs.json`` maps every case of :data:`CASES` to the ``model.config`` the
model recorded (as JSON, so that a tuple for a list or a float for an int shows); ``test_models.py``
rebuilds the models and compares. Regenerate the file only when a change of the recorded
arguments is intended (checkpoints store them as ``meta["model_args"]``)::

    PYTHONPATH=. python tests/model_configs.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from skelgraph.layouts import get_layout
from skelgraph.models import create

#: The reference configs, written by running this module.
REFERENCE = Path(__file__).resolve().parent / "data" / "model_configs.json"

_MY_PENN = get_layout("penn13").to_dict() | {"name": "my_penn"}
_SMALL_INFOGCN2 = {"channels": 8, "depth": 1, "head_channels": 8, "decoder_channels": 4}

#: case -> (registered model, keyword arguments of :func:`~skelgraph.models.create`)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "stgcn-defaults": ("stgcn", {"num_classes": 5}),
    "stgcn-args": (
        "stgcn",
        {
            "num_classes": 3,
            "layout": get_layout("penn13"),
            "in_channels": 4,
            "features": ("joint", "bone"),
            "channels": (np.int64(8), 16),
            "strides": np.array([1, 2]),
            "kernel_size": 5,
            "dropout": 0,
            "edge_importance": False,
            "causal": True,
            "label_smoothing": 0.2,
        },
    ),
    "agcn2s-defaults": ("agcn2s", {"num_classes": 5}),
    "agcn2s-args": (
        "agcn2s",
        {
            "num_classes": 2,
            "layout": _MY_PENN,
            "channels": [8, np.int32(8)],
            "strides": (1, 2),
            "kernel_size": 3,
            "dropout": 0.5,
            "causal": True,
            "label_smoothing": 0.1,
        },
    ),
    "infogcn2-defaults": ("infogcn2", {"num_classes": 5}),
    "infogcn2-args": (
        "infogcn2",
        {
            "num_classes": 4,
            "layout": get_layout("penn13").to_dict(),
            "features": ("joint", "velocity"),
            **_SMALL_INFOGCN2,
            "sagc_heads": 2,
            "temporal_heads": 2,
            "mlp_ratio": 1,
            "num_future": 2,
            "step_size": 2,
            "ode_depth": 2,
            "ode_heads": 2,
            "ode_solver": "euler",
            "head_heads": 2,
            "dropout": 0.1,
            "attention_window": 8,
            "reduce": "mean",
            "lambda_pred": 0.5,
            "lambda_feat": 0,
            "label_smoothing": 0.0,
            "detach_feature_target": False,
        },
    ),
    "infogcn-defaults": ("infogcn", {"num_classes": 5}),
    "infogcn-args": (
        "infogcn",
        {
            "num_classes": 3,
            "layout": "penn13",
            "features": ("relative2_velocity",),
            "channels": (np.int64(6), 12),
            "strides": np.array([1, 2]),
            "heads": 2,
            "kernel_size": 3,
            "dilations": (1,),
            "information_bottleneck": False,
            "prior_gain": 2,
            "noise_ratio": 1,
            "prior_seed": 3,
            "dropout": 0.5,
            "lambda_1": 0,
            "lambda_2": 1,
            "label_smoothing": 0.0,
        },
    ),
    "infogcn2-bottleneck": (
        "infogcn2",
        {
            "num_classes": 4,
            **_SMALL_INFOGCN2,
            "information_bottleneck": True,
            "prior_gain": 1,
            "noise_ratio": 0.25,
            "prior_seed": 2,
            "ib_lambda_1": 0.01,
            "ib_lambda_2": 1,
        },
    ),
    "posec3d-defaults": ("posec3d", {"num_classes": 5}),
    "posec3d-args": (
        "posec3d",
        {
            "num_classes": 3,
            "layout": "penn13",
            "in_channels": 4,
            "input": "both",
            "sigma": 1,
            "resolution": (24, np.int64(32)),
            "frames": np.int32(8),
            "padding": 0.1,
            "crop_area": None,
            "base_channels": 4,
            "stage_blocks": np.array([1, 1]),
            "inflate": (0, 1),
            "spatial_strides": [2, 2],
            "temporal_strides": [1, 2],
            "stem_stride": 2,
            "pool_stride": 1,
            "dropout": 0,
            "label_smoothing": 0.1,
        },
    ),
    "symgnn-defaults": ("symgnn", {"num_classes": 5}),
    "symgnn-args": (
        "symgnn",
        {
            "num_classes": 3,
            "layout": _MY_PENN,
            "features": ("bone",),
            "orders": np.array([0, 2]),
            "channels": (np.int64(8), 16),
            "strides": [1, np.int32(2)],
            "fusion": (0,),
            "kernel_size": 5,
            "dropout": 0.1,
            "structural_order": 2,
            "link_types": 2,
            "lambda_act": 1,
            "agim_channels": 16,
            "agim_embed_channels": 8,
            "agim_iterations": 1,
            "head_channels": 16,
            "decoder_channels": 16,
            "num_future": 4,
            "task_weighting": "fixed",
            "mgda_normalization": "l2",
            "recognition_weight": 0.75,
            "label_smoothing": 0.1,
        },
    ),
    "ensemble-defaults": (
        "ensemble",
        {"num_classes": 3, "members": [{"name": "stgcn"}, {"name": "agcn2s", "args": {}}]},
    ),
    "ensemble-args": (
        "ensemble",
        {
            "num_classes": 3,
            "layout": "penn13",
            "members": (
                {"name": "infogcn2", "args": {**_SMALL_INFOGCN2, "layout": "penn13"}},
                {
                    "name": "ensemble",
                    "args": {
                        "members": [{"name": "infogcn2", "args": {"features": ("bone",)}}],
                        "mirror": True,
                        "num_classes": 3,
                    },
                },
            ),
            "mirror": 1,
        },
    ),
    "ensemble-weights": (
        "ensemble",
        {
            "num_classes": 3,
            "members": [{"name": "stgcn"}, {"name": "stgcn", "args": {"features": ["bone"]}}],
            "weights": (np.float32(1.5), 1),
        },
    ),
}


def recorded_config(case: str) -> dict[str, Any]:
    """The ``config`` of the model built for ``case``, through JSON."""
    name, kwargs = CASES[case]
    return json.loads(json.dumps(create(name, **kwargs).config))


def main() -> None:
    configs = {case: recorded_config(case) for case in CASES}
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(configs, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
