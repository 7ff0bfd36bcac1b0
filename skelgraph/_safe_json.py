"""JSON from untrusted sources, parsed within bounds.

:func:`json.loads` recurses once per nesting level (deeply nested brackets raise
:class:`RecursionError`), turns any run of digits into an arbitrarily large integer (which
overflows later, when it becomes a float32) and accepts ``NaN`` and ``Infinity``, which are not
JSON. :func:`loads` checks the nesting depth before parsing and the length of every number while
parsing, so that every such input fails with a :class:`ValueError` that says why.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "loads"]

#: deepest nesting of arrays and objects accepted (a clip of frames of joints needs 3)
MAX_DEPTH = 32
#: longest run of digits accepted: a float64 needs at most 17 significant digits
MAX_NUMBER_CHARS = 32

#: a JSON string literal (escapes included), whose brackets do not nest
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
#: everything that is not a bracket
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_OPENING = (ord("["), ord("{"))
#: a run of digits longer than a number may be
_LONG_DIGITS = re.compile(rf"\d{{{MAX_NUMBER_CHARS + 1},}}")


def loads(text: str | bytes, where: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in :obj:`text`.

    Args:
        text (str or bytes): The JSON text (bytes as UTF-8).
        where (str): What the text is, for the messages (e.g. ``"message"``).
        max_depth (int, optional): Deepest nesting of arrays and objects accepted.

    Raises:
        ValueError: ``"{where}: ..."`` for text that is not UTF-8 or not JSON, nested deeper than
            :obj:`max_depth`, with a run of more than :data:`MAX_NUMBER_CHARS` digits, or with
            ``NaN`` / ``Infinity``.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: expected UTF-8 JSON text ({e})") from None
    outside_strings = _STRING.sub('""', text)
    digits = _LONG_DIGITS.search(outside_strings)
    if digits is not None:
        raise ValueError(
            f"{where}: expected numbers of at most {MAX_NUMBER_CHARS} digits, got a number of "
            f"{len(digits[0])} digits ({digits[0][:12]}...)"
        )
    depth = _depth(outside_strings, max_depth)
    if depth > max_depth:
        raise ValueError(
            f"{where}: expected JSON nested at most {max_depth} levels deep, got {depth}"
        )
    try:
        return json.loads(text, parse_constant=_constant)
    except _ConstantError as e:
        raise ValueError(f"{where}: {e}") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: expected JSON ({e})") from None


def _depth(outside_strings: str, max_depth: int) -> int:
    """The deepest nesting of the brackets (unbalanced ones count too); 0 when there are at
    most :obj:`max_depth` opening brackets (the depth cannot exceed it then)."""
    brackets = _NOT_BRACKET.sub("", outside_strings)
    if brackets.count("[") + brackets.count("{") <= max_depth:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == _OPENING[0]) | (codes == _OPENING[1]), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


class _ConstantError(ValueError):
    """``NaN`` or ``Infinity``, which JSON does not have."""


def _constant(name: str) -> float:
    raise _ConstantError(
        f"expected standard JSON numbers, got {name} (use null for a missing value)"
    )
