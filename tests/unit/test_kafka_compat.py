"""``finish_transaction_step``: a transactional step that never completes must not stall the member."""

from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaTimeoutError

from consumers.kafka_compat import finish_transaction_step


class _Result:
    def __init__(self, done: bool) -> None:
        self._latch = threading.Event()
        if done:
            self._latch.set()

    def wait(self, timeout_ms=None):
        return self._latch.wait(None if timeout_ms is None else timeout_ms / 1000)


class _Manager:
    def __init__(self, done: bool) -> None:
        self.done, self.calls = done, []

    def begin_commit(self):
        self.calls.append(("commit",))
        return _Result(self.done)

    def begin_abort(self):
        self.calls.append(("abort",))
        return _Result(self.done)

    def send_offsets_to_transaction(self, offsets, group):
        self.calls.append(("send_offsets", offsets, group))
        return _Result(self.done)


class _Sender:
    def __init__(self) -> None:
        self.wakeups = 0

    def wakeup(self) -> None:
        self.wakeups += 1


class _Producer:
    def __init__(self, done: bool) -> None:
        self._transaction_manager = _Manager(done)
        self._sender = _Sender()


@pytest.mark.parametrize("step", ["commit", "abort", "send_offsets"])
def test_a_lost_transactional_request_times_out(step):
    producer = _Producer(done=False)
    args = ({"tp": 1}, "group") if step == "send_offsets" else ()
    with pytest.raises(KafkaTimeoutError, match=step):
        finish_transaction_step(producer, step, 0.05, *args)
    assert producer._sender.wakeups == 1
    assert producer._transaction_manager.calls == [(step, *args)]


def test_a_completed_step_returns():
    producer = _Producer(done=True)
    finish_transaction_step(producer, "commit", 5.0)
    finish_transaction_step(producer, "send_offsets", 5.0, {"tp": 1}, "group")
    assert [c[0] for c in producer._transaction_manager.calls] == ["commit", "send_offsets"]


def test_without_the_internals_the_public_method_is_used():
    class Public:
        def __init__(self) -> None:
            self.called = []

        def commit_transaction(self):
            self.called.append("commit_transaction")

    producer = Public()
    finish_transaction_step(producer, "commit", 1.0)
    assert producer.called == ["commit_transaction"]
