r"""One-frame streaming inference: models frozen into plans that advance streams frame by frame.

A plan (:func:`build_plan`) is made from a trained model after loading it: every layer's
constants (folded scales, transposed and stacked weights, the rk4 stage embeddings, the
position biases of the attention rings) are made once, and the whole frame is traced. It steps
the model's own states (``init_state``, ``step``, ``step_streams``) with the model's
evaluation-mode outputs to float rounding, and batches streams that are each at their own frame.
A plan is made from the weights as they are when it is built (folded and transposed copies of
them): after the weights change or the model moves it is stale, and a new one must be built.

- :mod:`~skelgraph.streaming.sagc`: :class:`SAGCFrame`, an SA-GC layer on one frame;
- :mod:`~skelgraph.streaming.temporal`: :class:`TemporalFrame`, causal temporal attention on a
  growing cache or on window rings;
- :mod:`~skelgraph.streaming.rk4`: :class:`RK4Frame`, the rk4 rollout of the dynamics;
- :mod:`~skelgraph.streaming.slab`: :class:`Slab`, the rings of several streams stacked;
- :mod:`~skelgraph.streaming.plan`: :class:`FramePlan` (InfoGCN++) and :func:`build_plan`;
- :mod:`~skelgraph.streaming.ensemble`: :class:`EnsemblePlan`, an ensemble of members' plans.
"""

from skelgraph.streaming.ensemble import EnsemblePlan
from skelgraph.streaming.plan import FramePlan, build_plan
from skelgraph.streaming.rk4 import RK4Frame
from skelgraph.streaming.sagc import SAGCFrame
from skelgraph.streaming.slab import Slab
from skelgraph.streaming.temporal import TemporalFrame

__all__ = [
    "EnsemblePlan",
    "FramePlan",
    "RK4Frame",
    "SAGCFrame",
    "Slab",
    "TemporalFrame",
    "build_plan",
]
