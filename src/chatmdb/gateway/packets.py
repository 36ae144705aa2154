"""Socket.IO packets that a client can get wrong, turned into events the gateway answers.

python-socketio decodes a packet's JSON before any handler runs; a syntax
error or a nesting deep enough to exhaust the recursion limit would be an
exception in the server log and no ack. :class:`TolerantPacket` delivers
such an EVENT packet as the event :data:`MALFORMED` instead, and one without
a usable event name as :data:`NOT_AN_EVENT`; the ack id is parsed before the
data, so the client still gets an ``invalid`` error ack.
"""

from __future__ import annotations

from typing import Any, Final

import socketio

__all__ = ["MALFORMED", "NOT_AN_EVENT", "TolerantPacket"]

# The event name an undecodable EVENT packet is delivered as (no client can emit it by accident).
MALFORMED: Final = "\x00malformed"
# The event name an EVENT packet without a usable event name is delivered as.
NOT_AN_EVENT: Final = "\x00not-an-event"

_EVENTS = (socketio.packet.EVENT, socketio.packet.BINARY_EVENT)


class TolerantPacket(socketio.packet.Packet):  # type: ignore[misc]
    """A Socket.IO packet whose undecodable EVENT data becomes an event the gateway answers."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        # Everything chatmdb sends is JSON (stored records hold no bytes: the
        # store refuses them), so python-socketio's walk of every outgoing
        # record in search of bytes is work for nothing, on every ack and emit.
        return False

    def decode(self, encoded_packet: Any) -> int:
        try:
            count: int = super().decode(encoded_packet)
        except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
            if self.packet_type == socketio.packet.CONNECT:
                self.data = None  # undecodable auth: a connection without auth (and without recovery)
                return 0
            if self.packet_type not in _EVENTS:
                raise
            self.data = [MALFORMED]
            return 0
        if self.packet_type in _EVENTS and not _is_event(self.data):
            # No name, a name that is not a string (unhashable ones crash the
            # dispatch), or one of the server's own connect/disconnect/catch-all
            # handlers, which must never run on a client's say-so.
            self.data = [NOT_AN_EVENT]
        return count


def _is_event(data: Any) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], str)
        and data[0] not in socketio.AsyncServer.reserved_events
        and data[0] != "*"
    )
