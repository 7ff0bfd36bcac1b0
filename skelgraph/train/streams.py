"""Input streams of a multi-stream ensemble: one model per stream, fused with a weight each.

A stream is the model's input features (``model.args.features``, see
:mod:`skelgraph.features`) and its weight in the ensemble. ``skelgraph train --streams`` trains
one model per stream and fuses them (:func:`~skelgraph.train.run.train_streams`); the streams are
written ``FEATURE[+FEATURE...][:WEIGHT]`` (comma-separated on the command line) or named by a
recipe of :data:`RECIPES`.

**InfoGCN's six streams** (``infogcn``). The reference code trains the :math:`k`-th mode
:math:`(I - A^k) X` for three values of :math:`k`, each on the positions and on their motion, and
weighs the position models 1.5 and the motion models 1 when it sums their scores. On NTU's
25-joint tree :math:`k = 1` is the bone, :math:`k = 2` reaches two joints further, and
:math:`k = 8` spans the whole tree (8 bones from the spine base to the hand tips), where
:math:`(I - A^8) X` leaves every joint at its own position: the joint stream. On a 13-joint
layout such as ``penn13`` the first two keep their meaning (``bone``, ``relative2``: the position
relative to the parent and to the grandparent) and the mode that spans the tree is again the
joint stream (the clips are centred on their first pelvis), so the six streams are ``joint``,
``bone``, ``relative2`` (weight 1.5) and ``velocity``, ``bone_velocity``, ``relative2_velocity``
(weight 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from skelgraph.features import check_features

__all__ = ["RECIPES", "Stream", "parse_streams"]


@dataclass(frozen=True)
class Stream:
    """One model of a multi-stream ensemble.

    Attributes:
        features (tuple of str): the model's input features (``model.args.features``).
        weight (float): the model's weight in the ensemble's average of probabilities.
    """

    features: tuple[str, ...]
    weight: float = 1.0

    @property
    def name(self) -> str:
        """The features joined by ``+``: the stream's folder and label."""
        return "+".join(self.features)

    @property
    def override(self) -> str:
        """The configuration override that selects the stream's features."""
        return f"model.args.features=[{', '.join(self.features)}]"


#: Named stream sets: InfoGCN's six streams (see the module description) and SymGNN's joint
#: network with its bone-based dual (equal weights: the paper fuses the two scores by a weighted
#: sum without giving the weights).
RECIPES: dict[str, tuple[Stream, ...]] = {
    "infogcn": (
        Stream(("joint",), 1.5),
        Stream(("bone",), 1.5),
        Stream(("relative2",), 1.5),
        Stream(("velocity",), 1.0),
        Stream(("bone_velocity",), 1.0),
        Stream(("relative2_velocity",), 1.0),
    ),
    "symgnn": (Stream(("joint",), 1.0), Stream(("bone",), 1.0)),
}


def parse_streams(specs: Sequence[str]) -> list[Stream]:
    """Streams from ``specs``: recipe names (:data:`RECIPES`) or ``FEATURE[+FEATURE...][:WEIGHT]``,
    e.g. ``["infogcn"]`` or ``["joint:1.5", "velocity"]``.

    Raises:
        ValueError: naming the stream that is not a recipe, has an unknown feature or a weight
            that is not a positive number, or a stream given twice.
    """
    streams: list[Stream] = []
    for spec in specs:
        if spec in RECIPES:
            streams.extend(RECIPES[spec])
            continue
        names, sep, weight_text = spec.partition(":")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            weight = float("nan")
        if not weight > 0 or weight == float("inf"):
            raise ValueError(
                f"--streams {spec!r}: expected FEATURE[+FEATURE...][:WEIGHT] with a positive "
                f"weight, got weight {weight_text!r}"
            )
        try:
            features = check_features(names.split("+"))
        except ValueError as e:
            raise ValueError(f"--streams {spec!r}: {e}; or a recipe of {sorted(RECIPES)}") from None
        streams.append(Stream(features, weight))
    if not streams:
        raise ValueError("--streams: expected at least one stream or recipe, got none")
    names = [s.name for s in streams]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--streams: every stream once, got {repeated} more than once")
    return streams
