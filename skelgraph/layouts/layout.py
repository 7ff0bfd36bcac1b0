"""The :class:`Layout`: a named joint set with bones, centre, torso, mirror pairs and parts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["Layout", "mirror_pairs"]

_DICT_KEYS = ("name", "joints", "bones", "center", "torso", "pairs", "parts", "root")


@dataclass(frozen=True)
class Layout:
    r"""A named skeleton: joint names in array order plus the structure built on them.

    Sequences given as lists are stored as tuples and ``parts`` as a read-only mapping, so a layout
    is immutable, hashable and comparable by value. Every index is checked in ``__post_init__``;
    a :class:`ValueError` names the layout, the field, the expected and the actual value.

    Args:
        name (str): Registry name, e.g. ``"coco17"``.
        joints (tuple[str, ...]): The ``V`` joint names, in array order, unique.
        bones (tuple[tuple[int, int], ...]): ``(child, parent)`` joint index pairs. Usually a
            tree or forest; extra links (e.g. shoulder–shoulder) are allowed. No self-loops, no
            duplicates.
        center (tuple[int, ...]): Joints whose mean is the body centre (pelvis = mid-hips).
        torso (tuple[tuple[int, ...], tuple[int, ...]]): ``(upper, lower)`` joint sets whose
            means are the torso endpoints (mid-shoulders and pelvis); the torso length scales a
            skeleton.
        pairs (tuple[tuple[int, int], ...]): ``(left, right)`` mirror pairs; a joint is in
            at most one pair.
        parts (Mapping[str, tuple[int, ...]]): Body parts, e.g. ``head``, ``torso``, ``left_arm``,
            ``right_arm``, ``left_leg``, ``right_leg``; each non-empty.
        root (int, optional): Joint used as the centre of ST-GCN's spatial partitions; :obj:`None`
            uses the :obj:`center` joints. (default: :obj:`None`)
    """

    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]
    center: tuple[int, ...]
    torso: tuple[tuple[int, ...], tuple[int, ...]]
    pairs: tuple[tuple[int, int], ...]
    parts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    root: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Layout.name: expected a non-empty string, got {self.name!r}")
        set_ = object.__setattr__
        set_(self, "joints", tuple(self.joints))
        set_(self, "bones", tuple(_int_tuple(b) for b in self.bones))
        set_(self, "center", _int_tuple(self.center))
        set_(self, "torso", tuple(_int_tuple(t) for t in self.torso))
        set_(self, "pairs", tuple(_int_tuple(p) for p in self.pairs))
        set_(self, "parts", MappingProxyType({k: _int_tuple(v) for k, v in self.parts.items()}))
        if self.root is not None:
            set_(self, "root", int(self.root))
        self._validate()

    def _error(self, field_name: str, expected: str, actual: Any) -> ValueError:
        message = f"layout {self.name!r}: {field_name}: expected {expected}, got {actual!r}"
        return ValueError(message)

    def _check_indices(self, field_name: str, indices: tuple[int, ...]) -> None:
        for i in indices:
            if not 0 <= i < self.num_joints:
                raise self._error(field_name, f"joint indices in [0, {self.num_joints})", i)

    def _validate(self) -> None:
        V = self.num_joints
        if V == 0:
            raise self._error("joints", "at least one joint name", self.joints)
        for j in self.joints:
            if not isinstance(j, str) or not j:
                raise self._error("joints", "non-empty strings", j)
        duplicates = sorted({j for j in self.joints if self.joints.count(j) > 1})
        if duplicates:
            raise self._error("joints", "unique names", f"duplicates {duplicates}")
        seen: set[frozenset[int]] = set()
        for bone in self.bones:
            if len(bone) != 2:
                raise self._error("bones", "(child, parent) pairs", bone)
            self._check_indices("bones", bone)
            if bone[0] == bone[1]:
                raise self._error("bones", "two different joints (no self-loop)", bone)
            if frozenset(bone) in seen:
                raise self._error("bones", "each joint pair at most once", bone)
            seen.add(frozenset(bone))
        if not self.center:
            raise self._error("center", "at least one joint index", self.center)
        self._check_indices("center", self.center)
        if len(self.torso) != 2 or not all(self.torso):
            raise self._error("torso", "(upper joints, lower joints), both non-empty", self.torso)
        self._check_indices("torso", self.torso[0] + self.torso[1])
        paired: list[int] = []
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise self._error("pairs", "(left, right) pairs of two different joints", pair)
            self._check_indices("pairs", pair)
            paired.extend(pair)
        repeated = sorted({self.joints[i] for i in paired if paired.count(i) > 1})
        if repeated:
            raise self._error("pairs", "each joint in at most one pair", f"repeated {repeated}")
        for part, indices in self.parts.items():
            if not isinstance(part, str) or not indices:
                raise self._error("parts", "a name mapped to at least one joint", (part, indices))
            self._check_indices(f"parts[{part!r}]", indices)
        if self.root is not None:
            self._check_indices("root", (self.root,))

    def __hash__(self) -> int:
        return hash(
            (
                self.name,
                self.joints,
                self.bones,
                self.center,
                self.torso,
                self.pairs,
                tuple(self.parts.items()),
                self.root,
            )
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # ``parts`` is a read-only mapping proxy, which cannot be pickled as is
        return (Layout.from_dict, (self.to_dict(),))

    @property
    def num_joints(self) -> int:
        """The number of joints ``V``."""
        return len(self.joints)

    @property
    def num_bones(self) -> int:
        """The number of bones."""
        return len(self.bones)

    def index(self, joint: str) -> int:
        """The array index of the joint named :obj:`joint`."""
        try:
            return self.joints.index(joint)
        except ValueError:
            raise ValueError(
                f"layout {self.name!r}: joint: expected one of {list(self.joints)}, got {joint!r}"
            ) from None

    def flip_permutation(self) -> np.ndarray:
        """The joint order after a left/right swap, shape ``(V,)`` int64.

        ``keypoints[:, layout.flip_permutation()]`` swaps every mirror pair; applying it twice is
        the identity.
        """
        perm = np.arange(self.num_joints, dtype=np.int64)
        for left, right in self.pairs:
            perm[left], perm[right] = right, left
        return perm

    def bone_flip_permutation(self) -> np.ndarray:
        """The bone order after a left/right swap, shape ``(num_bones,)`` int64.

        Entry ``b`` is the index of the bone joining the mirror images of bone ``b``'s joints
        (in either direction), so ``per_bone[..., layout.bone_flip_permutation()]`` relabels values
        of the bones of a mirrored skeleton; applying it twice is the identity.

        Raises:
            ValueError: when the mirror image of a bone is not a bone of the layout.
        """
        joints = self.flip_permutation()
        index = {frozenset(bone): b for b, bone in enumerate(self.bones)}
        perm = np.empty(self.num_bones, dtype=np.int64)
        for b, (child, parent) in enumerate(self.bones):
            mirror = frozenset((int(joints[child]), int(joints[parent])))
            if mirror not in index:
                raise ValueError(
                    f"layout {self.name!r}: bones: expected the mirror image "
                    f"({self.joints[joints[child]]}, {self.joints[joints[parent]]}) of bone {b} "
                    f"({self.joints[child]}, {self.joints[parent]}) among the bones, got none"
                )
            perm[b] = index[mirror]
        return perm

    @classmethod
    def from_names(
        cls,
        name: str,
        joints: Sequence[str],
        bones: Iterable[tuple[str, str]],
        center: Sequence[str],
        torso: tuple[Sequence[str], Sequence[str]],
        parts: Mapping[str, Sequence[str]] | None = None,
        pairs: Iterable[tuple[str, str]] | None = None,
        root: str | None = None,
    ) -> Layout:
        """Builds a layout from joint names instead of indices.

        Args:
            name (str): Registry name.
            joints (Sequence[str]): Joint names in array order.
            bones (Iterable[tuple[str, str]]): ``(child, parent)`` name pairs.
            center (Sequence[str]): Centre joint names.
            torso (tuple[Sequence[str], Sequence[str]]): ``(upper, lower)`` joint names.
            parts (Mapping[str, Sequence[str]], optional): Body parts by joint names.
            pairs (Iterable[tuple[str, str]], optional): ``(left, right)`` names; :obj:`None` pairs
                names by their side as in :func:`mirror_pairs`.
            root (str, optional): Partition centre joint name.
        """
        joints = tuple(joints)
        position = {j: i for i, j in enumerate(joints)}

        def idx(field_name: str, names: Iterable[str]) -> tuple[int, ...]:
            out = []
            for n in names:
                if n not in position:
                    raise ValueError(
                        f"layout {name!r}: {field_name}: expected joint names from "
                        f"{list(joints)}, got {n!r}"
                    )
                out.append(position[n])
            return tuple(out)

        return cls(
            name=name,
            joints=joints,
            bones=tuple(idx("bones", b) for b in bones),
            center=idx("center", center),
            torso=(idx("torso", torso[0]), idx("torso", torso[1])),
            pairs=mirror_pairs(joints) if pairs is None else tuple(idx("pairs", p) for p in pairs),
            parts={k: idx(f"parts[{k!r}]", v) for k, v in (parts or {}).items()},
            root=None if root is None else idx("root", [root])[0],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (lists, dicts, ints, strings); see :meth:`from_dict`."""
        return {
            "name": self.name,
            "joints": list(self.joints),
            "bones": [list(b) for b in self.bones],
            "center": list(self.center),
            "torso": [list(self.torso[0]), list(self.torso[1])],
            "pairs": [list(p) for p in self.pairs],
            "parts": {k: list(v) for k, v in self.parts.items()},
            "root": self.root,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Layout:
        """Rebuilds a layout from :meth:`to_dict` output (e.g. after a JSON round-trip)."""
        missing = [k for k in _DICT_KEYS if k not in d and k not in ("parts", "root")]
        unknown = sorted(set(d) - set(_DICT_KEYS))
        if missing or unknown:
            raise ValueError(
                f"Layout.from_dict: expected keys {list(_DICT_KEYS)}, "
                f"got missing {missing} and unknown {unknown}"
            )
        return cls(**d)


def _int_tuple(values: Iterable[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


_SIDE = re.compile(r"^(left|right)_(.+)$|^(.+)_(left|right)$")


def _side(joint: str) -> tuple[str, str] | None:
    """``(side, body part)`` for ``left_x``/``x_left`` style names, else :obj:`None`."""
    m = _SIDE.match(joint)
    if m is None:
        return None
    return (m[1], m[2]) if m[1] else (m[4], m[3])


def mirror_pairs(joints: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``(left, right)`` index pairs of ``left_x``/``right_x`` or ``x_left``/``x_right`` names.

    Args:
        joints (Sequence[str]): Joint names in array order.
    """
    by_key = {_side(j): i for i, j in enumerate(joints) if _side(j) is not None}
    return tuple(
        (i, by_key[("right", key[1])])
        for key, i in by_key.items()
        if key[0] == "left" and ("right", key[1]) in by_key
    )
