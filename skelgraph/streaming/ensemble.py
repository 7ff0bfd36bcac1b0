r"""A streaming ensemble stepping its members' frame plans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from skelgraph.models.base import StreamingModel
from skelgraph.models.ensemble import StreamingEnsemble

__all__ = ["EnsemblePlan"]


class EnsemblePlan:
    r"""A :class:`~skelgraph.models.ensemble.StreamingEnsemble` whose members step through their
    plans (:func:`~skelgraph.streaming.build_plan`): the ensemble's own :meth:`step` and
    :meth:`step_streams` (views, fusion, the member states) with every member replaced by its
    plan. Made from the weights as they are, as its members' plans.

    Args:
        ensemble (StreamingEnsemble): the ensemble.
        members (sequence of StreamingModel): the plan of every member, in member order.

    Attributes:
        model (StreamingEnsemble): the ensemble the plan was built from.
        members (list[StreamingModel]): the members' plans.
    """

    def __init__(self, ensemble: StreamingEnsemble, members: Sequence[StreamingModel]) -> None:
        if len(members) != len(ensemble.members):
            raise ValueError(
                f"EnsemblePlan: members: expected a plan for each of the {len(ensemble.members)} "
                f"members, got {len(members)}"
            )
        self.model = ensemble
        self.members = list(members)

    def init_state(self, batch_size: int = 1) -> tuple[Any, ...]:
        """The ensemble's :meth:`~skelgraph.models.ensemble.StreamingEnsemble.init_state`."""
        return self.model.init_state(batch_size)

    def step(
        self, x_t: Tensor, state: Sequence[Any]
    ) -> tuple[Tensor, Tensor | None, tuple[Any, ...]]:
        """:meth:`StreamingEnsemble.step <skelgraph.models.ensemble.StreamingEnsemble.step>`
        with the members' plans."""
        return self.model.step(x_t, state, members=self.members)

    def step_streams(
        self, x_t: Tensor, states: Sequence[Sequence[Any]]
    ) -> tuple[Tensor, Tensor | None, list[tuple[Any, ...]]]:
        """:meth:`StreamingEnsemble.step_streams
        <skelgraph.models.ensemble.StreamingEnsemble.step_streams>` with the members' plans."""
        return self.model.step_streams(x_t, states, members=self.members)
