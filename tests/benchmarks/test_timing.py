"""The harness's timed call: results are released untimed, and a long call is followed by a wait for
the process to be idle (work left to background threads is not charged to the next case). No timing
assertions on the code measured: only on what the harness itself waits for."""

from __future__ import annotations

import threading
import time

from kldiv.bench import timing


def test_settle_returns_at_once_when_idle_and_waits_for_a_busy_thread() -> None:
    assert timing.settle() < 0.2  # an idle process: the first quiet step ends the wait

    stop = time.perf_counter() + 0.15

    def busy() -> None:
        while time.perf_counter() < stop:
            pass

    worker = threading.Thread(target=busy)
    worker.start()
    waited = timing.settle(limit_s=2.0)
    worker.join()
    assert waited >= 0.1  # it waited for the busy thread to finish (0.15 s from its start)
    assert timing.settle(limit_s=0.05, idle_cpu_s=-1.0) >= 0.05  # never idle: bounded by the limit


def test_timed_settles_only_after_long_calls(monkeypatch) -> None:
    settles = []
    monkeypatch.setattr(timing, "settle", lambda: settles.append(1))
    released = []
    timing.timed(timing.Case(lambda: None, lambda: released.append(1)))
    assert settles == [] and released == [1]
    timing.timed(timing.Case(lambda: time.sleep(timing.SETTLE_AFTER_S * 1.5)))
    assert settles == [1]
