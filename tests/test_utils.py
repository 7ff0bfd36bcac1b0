"""Progress that suits where it goes: bars on a terminal, lines in a log, nothing when quiet."""

from __future__ import annotations

import io

import pytest
from tqdm.auto import tqdm

import skelgraph.utils as utils
from skelgraph.utils import LineProgress, progress_bar


class Clock:
    """A monotonic clock that advances only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(utils.time, "monotonic", clock)
    return clock


def test_line_progress_writes_a_line_per_interval_and_a_last_one(clock):
    log = io.StringIO()
    bar = LineProgress(range(10), desc="epoch 1/3", unit="step", interval=30.0, file=log)
    for i in bar:
        clock.now += 8.0  # a step every 8 s: a line after steps 4 and 8 (32 s, 64 s)
        if i == 3:
            bar.set_postfix(loss="0.1234")
    lines = log.getvalue().splitlines()
    assert lines == [
        "epoch 1/3: 4/10 step (40%), 32.0s, loss=0.1234",
        "epoch 1/3: 8/10 step (80%), 64.0s, loss=0.1234",
        "epoch 1/3: 10/10 step (100%), 80.0s, loss=0.1234",
    ]
    assert "\r" not in log.getvalue()


def test_a_short_inner_loop_stays_silent(clock):
    log = io.StringIO()
    for _ in LineProgress(range(3), desc="validate", leave=False, file=log):
        clock.now += 1.0
    assert log.getvalue() == ""
    with LineProgress(total=4, desc="recognize", unit="frame", file=log) as bar:
        bar.update(4)
        clock.now += 2.5
    assert log.getvalue() == "recognize: 4/4 frame (100%), 2.5s\n"


def test_progress_bar_suits_the_output(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delitem(utils.sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(utils.sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(range(3), desc="x"), LineProgress)
    quiet = progress_bar(range(3), desc="x", disable=True)
    assert isinstance(quiet, tqdm) and quiet.disable
    assert list(quiet) == [0, 1, 2]
    monkeypatch.setattr(utils.sys, "stderr", Terminal())
    bar = progress_bar(range(3), desc="x")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
