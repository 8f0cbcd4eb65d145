"""The harness's timed call: results are released untimed, and a long call is followed by a wait for
the process to be idle (work left to background threads is not charged to the next case). No timing
assertions on the code measured: only on what the harness itself waits for."""

from __future__ import annotations

import threading
import time

import pytest

from kldiv.bench import timing


class FakeClock:
    """``time`` for :func:`kldiv.bench.timing.settle`: ``sleep`` advances the wall clock, and the
    process's CPU time by ``busy_s`` per step while ``busy_steps`` remain (a background thread's work)."""

    def __init__(self, busy_steps: int, busy_s: float = 0.01) -> None:
        self.wall, self.cpu, self.busy_steps, self.busy_s = 0.0, 0.0, busy_steps, busy_s

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def sleep(self, seconds: float) -> None:
        self.wall += seconds
        if self.busy_steps > 0:
            self.busy_steps -= 1
            self.cpu += self.busy_s


def test_settle_waits_while_the_process_works_and_no_longer(monkeypatch) -> None:
    for busy_steps, waited in ((0, 0.01), (5, 0.06), (1000, 0.5)):  # idle; busy 5 steps; never idle
        clock = FakeClock(busy_steps)
        monkeypatch.setattr(timing, "time", clock)
        assert timing.settle() == pytest.approx(waited)
    clock = FakeClock(3, busy_s=0.001)  # below idle_cpu_s per step: idle at once
    monkeypatch.setattr(timing, "time", clock)
    assert timing.settle() == pytest.approx(0.01)


def test_settle_sees_a_real_busy_thread() -> None:
    stop = time.perf_counter() + 0.15

    def busy() -> None:
        while time.perf_counter() < stop:
            pass

    worker = threading.Thread(target=busy)
    worker.start()
    waited = timing.settle(limit_s=5.0, idle_cpu_s=1e-4)
    worker.join()
    assert waited > 0.01  # more than one quiet step: it saw the thread's CPU time


def test_timed_settles_only_after_long_calls(monkeypatch) -> None:
    settles = []
    monkeypatch.setattr(timing, "settle", lambda: settles.append(1))
    released = []
    timing.timed(timing.Case(lambda: None, lambda: released.append(1)))
    assert settles == [] and released == [1]
    timing.timed(timing.Case(lambda: time.sleep(timing.SETTLE_AFTER_S * 1.5)))
    assert settles == [1]
