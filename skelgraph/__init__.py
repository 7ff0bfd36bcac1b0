"""skelgraph: skeleton-based action recognition and motion forecasting with PyTorch Geometric."""

__version__ = "0.1.0"
