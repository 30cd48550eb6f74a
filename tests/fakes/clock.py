"""A clock tests move by hand, for code that takes `clock: Callable[[], float]`."""
from __future__ import annotations


class Clock:
    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
