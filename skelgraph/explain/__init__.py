"""Explaining skeleton models.

* :mod:`skelgraph.explain.graph` (re-exported here): skeleton graphs, sample frames, attention
  maps and explanations as :mod:`networkx` graphs, ready for GraphML and GEXF;
* :mod:`skelgraph.explain.plots`: the pictures (skeletons with their strongest edges, joint
  importance over time, temporal attention, class probability over time);
* :mod:`skelgraph.explain.attribution`: joint importance per frame (integrated gradients,
  gradient × input, attention), the deletion curve that measures its faithfulness, and the
  explanation of a clip or a dataset that ``skelgraph explain`` writes. It imports the models
  and the datasets, so it sits above them (import it by its full name).
"""

from skelgraph.explain.graph import explanation_graph, space_time_graph, to_networkx

__all__ = ["explanation_graph", "space_time_graph", "to_networkx"]
