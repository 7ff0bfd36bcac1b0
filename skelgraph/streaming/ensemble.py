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

    def functional_caches(self, batch_size: int = 1) -> list[Tensor]:
        """The caches :meth:`functional_step` takes before the first frame: every member's
        :meth:`FramePlan.functional_caches <skelgraph.streaming.FramePlan.functional_caches>`
        once per view (the input, then its mirror image), in member order.

        Raises:
            ValueError: when a member's plan has no functional step (see :meth:`functional_step`).
        """
        views = 2 if self.model.mirror else 1
        return [
            ring
            for member in self._functional("functional_caches")
            for _ in range(views)
            for ring in member.functional_caches(batch_size)
        ]

    def functional_step(
        self, x_t: Tensor, previous: Tensor, position: Tensor, caches: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        r"""The ensemble's frame of :math:`B` streams as a pure function of tensors (see
        :meth:`FramePlan.functional_step <skelgraph.streaming.FramePlan.functional_step>`, whose
        arguments it takes): the ensemble's own :meth:`step` (views, fusion) with every member's
        functional step on its part of ``caches`` (in :meth:`functional_caches` order).

        Returns:
            (Tensor, Tensor or None, list[Tensor]): the fused logits :math:`(B, K)`, the first
            member's forecasts :math:`(B, N, V, C - 1)` and the new rings.

        Raises:
            ValueError: when a member's plan is not a :class:`~skelgraph.streaming.FramePlan`
                with an attention window, or ``caches`` has the wrong number of tensors.
        """
        members = self._functional("functional_step")
        views = self.model.views(previous)
        sizes = [2 * len(member.encoder) for member in members for _ in views]
        if len(caches) != sum(sizes):
            raise ValueError(
                f"EnsemblePlan.functional_step: caches: expected {sum(sizes)} tensors "
                f"(functional_caches), got {len(caches)}"
            )
        parts = iter(sizes)
        states, start = [], 0
        for _ in members:
            for view in views:
                size = next(parts)
                states.append((view, position, caches[start : start + size]))
                start += size
        steps = [_FunctionalMember(member) for member in members]
        logits, forecast, new_states = self.model.step(x_t, states, members=steps)
        return logits, forecast, [ring for _, _, rings in new_states for ring in rings]

    def _functional(self, name: str) -> list[Any]:
        """The members' plans, when every one has a functional step (a
        :class:`~skelgraph.streaming.FramePlan`, which checks its window itself)."""
        for i, member in enumerate(self.members):
            if not callable(getattr(member, "functional_step", None)):
                raise ValueError(
                    f"EnsemblePlan.{name}: members[{i}]: expected a member that streams through "
                    f"a frame plan (InfoGCN2 with an rk4 solver), got "
                    f"{type(getattr(member, 'model', member)).__name__}"
                )
        return list(self.members)


class _FunctionalMember:
    """A member's :class:`~skelgraph.streaming.FramePlan` stepping pure states ``(previous
    frame, position, rings)`` with its ``functional_step``, as :meth:`StreamingEnsemble.step
    <skelgraph.models.ensemble.StreamingEnsemble.step>` steps its members."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan

    def step(
        self, x_t: Tensor, state: tuple[Tensor, Tensor, Sequence[Tensor]]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, list[Tensor]]]:
        previous, position, caches = state
        logits, forecast, rings = self.plan.functional_step(x_t, previous, position, caches)
        return logits, forecast, (x_t, position + 1, rings)
