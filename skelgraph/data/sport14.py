"""The 14 sport actions shared by Penn Action, UCF101 and Kinetics-400 (the blog's §2.1 table).

``to_sport14`` maps a class name of any of the three datasets to one of the :data:`SPORT14` names,
ignoring case, spaces, underscores and hyphens (``"BenchPress"``, ``"bench pressing"`` and
``"bench_press"`` all give ``"bench_press"``); a name outside the 14 actions gives ``None``.
"""

from __future__ import annotations

__all__ = ["SPORT14", "to_sport14"]

#: the 14 class names, in the order of the blog's table (most to fewest clips)
SPORT14: tuple[str, ...] = (
    "squat",
    "bench_press",
    "pullup",
    "pushup",
    "jump_rope",
    "jumping_jacks",
    "clean_and_jerk",
    "lunges",
    "wall_pushups",
    "situp",
    "handstand_pushups",
    "handstand_walking",
    "snatch_weight_lifting",
    "running_on_treadmill",
)

#: dataset spellings that do not normalise to the SPORT14 name itself (UCF101 and Kinetics-400)
_ALIASES: dict[str, str] = {
    "bodyweightsquats": "squat",  # UCF101
    "squats": "squat",
    "benchpressing": "bench_press",  # Kinetics-400
    "pullups": "pullup",  # UCF101, Kinetics-400 "pull ups"
    "pushups": "pushup",  # UCF101
    "jumpingjack": "jumping_jacks",  # UCF101
    "lunge": "lunges",  # Kinetics-400
    "situps": "situp",
}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " _-\t")


_LOOKUP: dict[str, str] = {_key(name): name for name in SPORT14} | _ALIASES


def to_sport14(name: str) -> str | None:
    """The :data:`SPORT14` name of a Penn Action / UCF101 / Kinetics-400 class, or ``None``.

    >>> to_sport14("HandstandPushups"), to_sport14("snatch weight lifting")
    ('handstand_pushups', 'snatch_weight_lifting')
    >>> to_sport14("golf_swing") is None
    True
    """
    return _LOOKUP.get(_key(name))
