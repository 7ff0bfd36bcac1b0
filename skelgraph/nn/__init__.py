"""Graph and temporal layers for skeleton sequences: batched PyG graphs, ``x`` ``[B·V, T, C]``;
SymGNN's joint- and part-scale operators; the 3D ResNet of pseudo-heatmap volumes
``[B, K, T, H, W]``."""

from skelgraph.nn.actional import ActionalGraphInference, PointMLP
from skelgraph.nn.agcn import AdaptiveGraphConv, AGCNBlock
from skelgraph.nn.bottleneck import BottleneckOutput, InformationBottleneck
from skelgraph.nn.ode import ODEDynamics, SinusoidalTimeEmbedding, rk4_rollout, rollout
from skelgraph.nn.resnet3d import Bottleneck3d, SlowOnly3d
from skelgraph.nn.sagc import SAGC
from skelgraph.nn.stgcn import STGCNBlock, STGCNConv, graph_partitions
from skelgraph.nn.symgnn import (
    JointGraphConv,
    JointGraphTemporalBlock,
    MotionDecoder,
    MultiScaleGCN,
    PartGraphConv,
    PartGraphTemporalBlock,
    PartPooling,
    structural_polynomial,
)
from skelgraph.nn.temporal import CausalTemporalAttention, KVCache
from skelgraph.nn.temporal_conv import MultiScaleTemporalConv, TemporalConv

__all__ = [
    "SAGC",
    "AGCNBlock",
    "ActionalGraphInference",
    "AdaptiveGraphConv",
    "Bottleneck3d",
    "BottleneckOutput",
    "CausalTemporalAttention",
    "InformationBottleneck",
    "JointGraphConv",
    "JointGraphTemporalBlock",
    "KVCache",
    "MotionDecoder",
    "MultiScaleGCN",
    "MultiScaleTemporalConv",
    "ODEDynamics",
    "PartGraphConv",
    "PartGraphTemporalBlock",
    "PartPooling",
    "PointMLP",
    "STGCNBlock",
    "STGCNConv",
    "SinusoidalTimeEmbedding",
    "SlowOnly3d",
    "TemporalConv",
    "graph_partitions",
    "rk4_rollout",
    "rollout",
    "structural_polynomial",
]
