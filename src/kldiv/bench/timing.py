"""Timed calls: one call on ``time.perf_counter``, medians of calls interleaved round-robin, progress.

Interleaving (each repetition calls every implementation once, in turn) makes a drift of the machine
(frequency, memory bandwidth, a neighbour's load) hit every implementation alike. What a call returns
is released after the clock stops, so that freeing it is not timed; after a call of
:data:`SETTLE_AFTER_S` or more the next one waits until the process is idle (:func:`settle`), so that
work a call leaves to background threads is not timed in the next implementation's call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO


@dataclasses.dataclass
class Case:
    """A prepared call: ``run`` is timed, ``after`` (untimed) releases what it left behind."""

    run: Callable[[], Any]
    after: Callable[[], None] | None = None


SETTLE_AFTER_S = 0.02
"""Calls at least this long are followed by :func:`settle` (shorter ones are not: a pause lets idle
cores sleep, and the next short call then pays for waking them)."""


def timed(case: Case) -> float:
    """Seconds of one ``case.run()``; what it returns is released after the clock stops, and a call
    of :data:`SETTLE_AFTER_S` or more is followed by :func:`settle`."""
    start = time.perf_counter()
    result = case.run()
    elapsed = time.perf_counter() - start
    del result
    if case.after is not None:
        case.after()
    if elapsed >= SETTLE_AFTER_S:
        settle()
    return elapsed


def settle(step_s: float = 0.01, idle_cpu_s: float = 0.002, limit_s: float = 0.5) -> float:
    """Wait until the process uses less than ``idle_cpu_s`` of CPU time (all threads) in ``step_s``
    of wall time, for about ``limit_s`` at most (the step under way is finished); returns the seconds
    waited.

    XLA's CPU client returns a result before it has released the call's temporaries: the JAX formula
    with Keras' clip leaves two 500 MB copies at [4096, 32000], and the implementation timed after it
    measured 137–173 ms instead of 84–110 ms (the plain formula, ``kldiv.jax``) until each call was
    followed by such a wait.
    """
    start = time.perf_counter()
    used = time.process_time()
    while time.perf_counter() - start < limit_s:
        time.sleep(step_s)
        now = time.process_time()
        if now - used < idle_cpu_s:
            break
        used = now
    return time.perf_counter() - start


def median_ms(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, interleaved: bool = True
) -> dict[str, float]:
    """Median milliseconds of each call after ``warmup`` calls: ``repeats`` calls each, interleaved
    round-robin, or (``interleaved=False``) each call's repeats back to back."""
    cases = {name: Case(call) for name, call in calls.items()}
    for case in cases.values():
        for _ in range(warmup):
            timed(case)
    if interleaved:
        order = [name for _ in range(repeats) for name in cases]
    else:
        order = [name for name in cases for _ in range(repeats)]
    times: dict[str, list[float]] = {name: [] for name in cases}
    for name in order:
        times[name].append(timed(cases[name]))
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


class PlainProgress:
    """Progress as plain lines on a stream (``--plain``, or when rich is not installed)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self._last = ""

    def update(self, description: str, advance: int = 0) -> None:
        self.done += advance
        if description != self._last:
            self._last = description
            print(f"[{self.done}/{self.total}] {description}", file=self.stream, flush=True)


class _RichProgress:
    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("benchmark", total=total)

    def update(self, description: str, advance: int = 0) -> None:
        self.progress.update(self.task, description=description, advance=advance)


@contextlib.contextmanager
def progress_bar(total: int, stream: TextIO, use_rich: bool = True) -> Iterator[Any]:
    """A rich progress bar on ``stream`` (an object with ``update(description, advance=0)``), or
    plain lines if rich is missing or not wanted."""
    if use_rich and importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(file=stream), transient=False) as progress:
            yield _RichProgress(progress, total)
    else:
        yield PlainProgress(total, stream)


def one_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line (at most 300 characters), for a failed case's record."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
