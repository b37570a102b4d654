"""The shared fan-out threads: order, per-call bound, context, errors, nesting, reuse."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from fusion_dspy.lm.fanout import fan_out, threads_started

_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


def test_results_keep_the_order_of_the_items():
    assert fan_out(lambda x: (time.sleep(0.01 * (5 - x)), x * x)[1], range(5), max_workers=3) == [0, 1, 4, 9, 16]


def test_each_call_is_bounded_by_its_max_workers():
    running, peak, lock = 0, 0, threading.Lock()

    def work(_):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.03)
        with lock:
            running -= 1

    fan_out(work, range(12), max_workers=3)
    assert peak == 3


def test_the_callers_context_reaches_every_call():
    token = _var.set("caller")
    try:
        assert fan_out(lambda _: _var.get(), range(4), max_workers=4) == ["caller"] * 4
    finally:
        _var.reset(token)


def test_the_first_error_is_raised_after_every_call_finished():
    finished = []

    def work(x):
        if x == 1:
            raise ValueError("boom 1")
        time.sleep(0.05)
        finished.append(x)
        return x

    with pytest.raises(ValueError, match="boom 1"):
        fan_out(work, range(4), max_workers=4)
    assert sorted(finished) == [0, 2, 3]


def test_nested_fan_out_does_not_deadlock_when_every_thread_is_busy(monkeypatch):
    import fusion_dspy.lm.fanout as fanout

    fanout._reset_for_tests()
    monkeypatch.setattr(fanout, "MAX_THREADS", 2)
    try:
        # 4 outer calls on 2 threads, each waiting on 3 inner calls: one executor per depth keeps it moving
        out = fan_out(lambda i: sum(fan_out(lambda j: i * j, range(3), max_workers=3)), range(4), max_workers=4)
        assert out == [0, 3, 6, 9]
    finally:
        fanout._reset_for_tests()


def test_threads_are_reused_across_calls():
    import fusion_dspy.lm.fanout as fanout

    fanout._reset_for_tests()
    for _ in range(50):
        fan_out(lambda x: x, range(4), max_workers=4)
    assert threads_started() <= 4  # not 200: a long run does not start threads per example


def test_one_worker_or_one_item_runs_in_the_callers_thread():
    me = threading.get_ident()
    assert fan_out(lambda _: threading.get_ident(), range(3), max_workers=1) == [me] * 3
    assert fan_out(lambda _: threading.get_ident(), [0], max_workers=4) == [me]
