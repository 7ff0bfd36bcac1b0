"""Graph and temporal layers for skeleton sequences: batched PyG graphs, ``x`` ``[B·V, T, C]``."""

from skelgraph.nn.agcn import AdaptiveGraphConv, AGCNBlock
from skelgraph.nn.bottleneck import BottleneckOutput, InformationBottleneck
from skelgraph.nn.ode import ODEDynamics, SinusoidalTimeEmbedding, rk4_rollout, rollout
from skelgraph.nn.sagc import SAGC
from skelgraph.nn.stgcn import STGCNBlock, STGCNConv, graph_partitions
from skelgraph.nn.temporal import CausalTemporalAttention, KVCache
from skelgraph.nn.temporal_conv import MultiScaleTemporalConv, TemporalConv

__all__ = [
    "SAGC",
    "AGCNBlock",
    "AdaptiveGraphConv",
    "BottleneckOutput",
    "CausalTemporalAttention",
    "InformationBottleneck",
    "KVCache",
    "MultiScaleTemporalConv",
    "ODEDynamics",
    "STGCNBlock",
    "STGCNConv",
    "SinusoidalTimeEmbedding",
    "TemporalConv",
    "graph_partitions",
    "rk4_rollout",
    "rollout",
]
