"""Work around kafka-python 3.0.x defects: refused SASL credentials that retry until a timeout, and
a consumer-group join abandoned half-way (see :func:`_patch_pending_join`).

With kafka-python 3.0.12 and a real broker (Kafka 4.2, SCRAM), a wrong password never raises
``SaslAuthenticationFailedError``: every client constructor (``KafkaAdminClient``,
``KafkaProducer``, ``KafkaConsumer``) retries the bootstrap connection until
``bootstrap_timeout_ms`` and then raises the *retriable* ``KafkaTimeoutError('Unable to bootstrap
from ...')``. Two defects combine:

1. ``kafka.net.transport.KafkaTCPTransport._read_from_sock`` drops the bytes of a read that also saw
   end-of-file. The broker sends its ``SaslAuthenticate`` error response (error 58, "Authentication
   failed during authentication due to invalid credentials ...") and closes the socket at once, so the
   response is usually lost and the client only logs ``KafkaConnectionError: socket disconnected``.
2. ``kafka.net.connection.KafkaConnection.initialize`` catches every error and only closes the
   connection, so ``KafkaConnectionManager._connect`` never records the authentication failure that
   ``get_connection`` (``maybe_raise_auth_failure``) would raise, and ``_do_bootstrap`` treats it
   as one more retriable failure.

:func:`install` patches both (idempotent; a no-op when the patched functions are missing, e.g. in
another kafka-python version): received bytes are handed to the protocol before the end-of-file is
acted on, and ``initialize`` re-raises the errors retrying cannot fix
(:func:`consumers.kafka_config.is_fatal`: authentication, authorisation) after closing the
connection. A wrong password then makes the client constructor raise
``kafka.errors.SaslAuthenticationFailedError`` within a second or so.

>>> install() in (True, False)
True
>>> install()  # already installed (or not applicable): nothing to do
False
"""

from __future__ import annotations

import functools
import logging
import threading
import time

log = logging.getLogger(__name__)

_lock = threading.Lock()
_installed = False


def install() -> bool:
    """Apply the patches once; True when they were applied by this call."""
    global _installed
    with _lock:
        if _installed:
            return False
        _installed = True
        try:
            import kafka.errors as errors
            from kafka.net import connection as kconn
            from kafka.net import transport as ktransport
        except ImportError:  # another kafka-python layout: nothing to patch
            return False
        tcp = getattr(ktransport, "KafkaTCPTransport", None)
        conn_cls = getattr(kconn, "KafkaConnection", None)
        if tcp is None or conn_cls is None or not hasattr(tcp, "_read_from_sock") \
                or not hasattr(conn_cls, "initialize"):
            return False
        _patch_transport(tcp, errors)
        _patch_initialize(conn_cls)
        _patch_pending_join()
        return True


def _patch_pending_join() -> None:
    """Finish a consumer-group join that is in flight (kafka-python 3.0.12; report upstream).

    ``BaseCoordinator.join_group_async`` drives JoinGroup/SyncGroup in a loop ``while
    self.need_rejoin()``; when the caller's poll timeout expires it returns and leaves the join
    task in flight, expecting the next ``poll`` to await it again. But the next ``poll`` only
    re-enters when ``need_rejoin()`` is still true, and ``ConsumerCoordinator.need_rejoin``
    recomputes it from scratch: for a rejoin that was started because the metadata snapshot
    differed from the assignment snapshot (a member that joined before it had the topic's
    partitions gets ``[]`` from the range assignor, then rejoins when the metadata arrives), a
    later metadata update that makes the two snapshots equal again turns it false while the
    JoinGroup is pending. The join is then abandoned: heartbeats stay disabled (they are off
    during a join), the coordinator expires the member, the group goes Empty, and the client,
    which never sees an error, polls forever with no partitions (seen after restarts: ``partitions
    assigned: []``, ``partitions revoked: []``, then nothing). The Java client cannot do this: its
    loop runs while ``rejoinNeededOrPending()``, i.e. also while a join future is pending. This
    patch gives kafka-python the same rule: a started rebalance (``rejoining``) or an unfinished
    join task keeps ``need_rejoin()`` true until the join completes.
    """
    try:
        from kafka.coordinator.consumer import ConsumerCoordinator
    except ImportError:
        return
    original = ConsumerCoordinator.need_rejoin
    if getattr(original, "_interest_stream_patched", False):
        return

    @functools.wraps(original)
    def need_rejoin(self):
        task = getattr(self, "_join_task", None)
        if getattr(self, "rejoining", False) or (task is not None and not task.is_done):
            return True
        return original(self)

    need_rejoin._interest_stream_patched = True
    ConsumerCoordinator.need_rejoin = need_rejoin


def _patch_transport(tcp, errors) -> None:
    async def _read_from_sock(self):
        while self._read and not self._closed:
            await self._net.wait_read(self._sock)
            recvd_data, err = self._sock_recv()
            if recvd_data:
                self.last_read = time.monotonic()
                if self._protocol and getattr(self._protocol, "_sensors", None):
                    self._protocol._sensors.bytes_received.record(len(recvd_data))
                try:
                    self._protocol.data_received(recvd_data)
                except errors.KafkaProtocolError as exc:
                    return self.abort(error=exc)
            if err:
                return self.abort(error=err)

    _read_from_sock.__doc__ = "Deliver what was read before acting on end-of-file (interest-stream patch)."
    tcp._read_from_sock = _read_from_sock


def _patch_initialize(conn_cls) -> None:
    from consumers.kafka_config import is_fatal

    original = conn_cls.initialize

    async def initialize(self, timeout_at=None):
        captured: list[BaseException] = []
        close = self.close

        def close_and_remember(error=None, *args, **kwargs):
            if error is not None:
                captured.append(error)
            return close(error, *args, **kwargs)

        self.close = close_and_remember
        try:
            await original(self, timeout_at)
        finally:
            del self.close  # back to the class's method
        for error in captured:
            if is_fatal(error):
                raise error  # KafkaConnectionManager._connect records it; bootstrap then raises it

    initialize.__doc__ = original.__doc__
    conn_cls.initialize = initialize


# step -> (the transaction manager's method that starts it, the producer's public, unbounded method)
_TRANSACTION_STEPS = {
    "send_offsets": ("send_offsets_to_transaction", "send_offsets_to_transaction"),
    "commit": ("begin_commit", "commit_transaction"),
    "abort": ("begin_abort", "abort_transaction"),
}


def finish_transaction_step(producer, step: str, timeout_s: float, *args) -> None:
    """Run a transactional step of ``producer`` and wait for it at most ``timeout_s`` seconds.

    kafka-python 3.0.x's ``send_offsets_to_transaction``, ``commit_transaction`` and
    ``abort_transaction`` wait without a bound. When the broker goes away while the request is in
    flight (a broker restart) the result may never complete, and a member waiting on it stalls for
    good. ``step`` is ``"send_offsets"``, ``"commit"`` or ``"abort"``; on timeout this raises the
    retriable ``KafkaTimeoutError``, so the caller can drop the producer and start afresh (its
    successor's ``init_transactions`` fences and aborts whatever the old one left open).

    Falls back to the public, unbounded method when the producer lacks the internals used here.
    """
    import kafka.errors as errors

    begin, public = _TRANSACTION_STEPS[step]
    manager = getattr(producer, "_transaction_manager", None)
    sender = getattr(producer, "_sender", None)
    if manager is None or sender is None or not hasattr(manager, begin):
        getattr(producer, public)(*args)
        return
    result = getattr(manager, begin)(*args)
    sender.wakeup()
    if not result.wait(timeout_ms=timeout_s * 1000.0):
        raise errors.KafkaTimeoutError(f"transaction {step} did not complete within {timeout_s:.0f} s")
