"""The Redis transport the portal's Celery connections use (CELERY_BROKER_TRANSPORT in the settings):
kombu's own, with one fault of kombu 5.7.0 / celery 5.7.0 worked around.

When Redis goes away, the worker's consumer closes its broker connection before reconnecting
(celery/worker/consumer/consumer.py, on_connection_error_after_connected). Closing each channel puts
its unacknowledged messages back on the queue ("Restoring N unacknowledged message(s)",
kombu/transport/virtual/base.py, restore_unacked_once), and the connection then drops its transport's
``client`` (kombu/connection.py, _do_close_transport). A task that was still running in a pool process
(acks_late) finishes afterwards, and the main process acknowledges its message on that closed channel:
QoS.ack -> _remove_from_indices -> Channel.conn_or_acquire -> _get_pool -> _connparams reads
``self.connection.client.hostname`` and raises ``AttributeError: 'NoneType' object has no attribute
'hostname'``. Celery's ack_log_error catches only the transport's connection errors, so the
AttributeError reaches the event loop and the worker stops for good with "Unrecoverable error". No
newer kombu or celery on the package index changes this path (5.7.0 is the newest of both).

An acknowledgement or rejection that arrives for a closed channel has nothing left to do: the channel
already gave the message back to the queue (or, if Redis was down at that moment, left it in the
unacked set that Redis's visibility timeout restores). Either way the message is delivered again, and
the inference task is idempotent (it claims only a queued study), so the second delivery is a no-op.
This QoS drops such a late acknowledgement with a warning instead of raising. Without it, the failed
acknowledgement also leaves the message's tag in the closed channel's delivered set, and a later close
of that channel tries to restore it through the same dropped client (restore_unacked -> _connparams),
the second way the same AttributeError was seen to end the worker; a restore with no client left is
skipped too (the message stays in Redis's unacked set, and the reconciler re-sends its study).

tests/test_faults_broker.py: without this transport the prefork worker died at the second of 20 Redis
kills; with it, 20 kills and an outage, 40 late acknowledgements dropped, every study done.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def _channel_closed(self, delivery_tag: Any, what: str) -> bool:
        channel = self.channel
        if not channel.closed and channel.connection is not None and channel.connection.client is not None:
            return False
        logger.warning(
            "Not %s message %s: its broker channel closed when the connection was lost, and the message "
            "went back to the queue; its next delivery finds the work done",
            what,
            delivery_tag,
        )
        self._delivered.pop(delivery_tag, None)
        self._dirty.discard(delivery_tag)
        return True

    def restore_unacked(self, client: Any = None) -> None:
        connection = self.channel.connection
        if client is None and (connection is None or connection.client is None):
            logger.warning(
                "Not restoring %d unacknowledged message(s) through a closed broker connection; "
                "Redis restores them after the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return
        super().restore_unacked(client)

    def ack(self, delivery_tag: Any) -> None:
        if not self._channel_closed(delivery_tag, "acknowledging"):
            super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if not self._channel_closed(delivery_tag, "rejecting"):
            super().reject(delivery_tag, requeue=requeue)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
