"""Skeleton models: the registry (``create("infogcn2", num_classes=14, layout="coco17")``), the
built-in models, checkpoints and the pretrained models shipped with the package.

Every model takes dense joints ``x [B, V, T, C]`` and an optional frame mask ``[B, T]`` and
returns a :class:`ModelOutput`; see :class:`SkeletonModel`. :class:`Ensemble` (``"ensemble"``)
averages the probabilities of several models; :func:`load_pretrained` loads a packaged checkpoint
and :mod:`skelgraph.models.checkpoint` any other. A :class:`Forecaster` predicts the frames after
the observed ones (InfoGCN++ and its ensembles, and the :class:`ZeroVelocity` and
:class:`ConstantVelocity` baselines).

Importing a model's module registers it (:func:`register_model`); this package imports the
built-in ones.
"""

from __future__ import annotations

from skelgraph.models.agcn import AGCN2s
from skelgraph.models.base import Forecaster, ModelOutput, SkeletonModel
from skelgraph.models.ensemble import Ensemble
from skelgraph.models.forecasting import ConstantVelocity, ZeroVelocity
from skelgraph.models.infogcn import InfoGCN
from skelgraph.models.infogcn2 import InfoGCN2
from skelgraph.models.posec3d import PoseC3D
from skelgraph.models.pretrained import available_pretrained, load_pretrained, pretrained_path
from skelgraph.models.registry import available_models, create, register_model, registered_name
from skelgraph.models.stgcn import STGCN
from skelgraph.models.symgnn import SymGNN

__all__ = [
    "STGCN",
    "AGCN2s",
    "ConstantVelocity",
    "Ensemble",
    "Forecaster",
    "InfoGCN",
    "InfoGCN2",
    "ModelOutput",
    "PoseC3D",
    "SkeletonModel",
    "SymGNN",
    "ZeroVelocity",
    "available_models",
    "available_pretrained",
    "create",
    "load_pretrained",
    "pretrained_path",
    "register_model",
    "registered_name",
]
