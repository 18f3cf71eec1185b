"""Pure: one MQTT message as the hub received it, decoded and validated, or marked malformed.

Nothing here raises for a bad payload: :func:`classify` turns every problem (unknown topic,
wrong channel, undecodable JSON, a message whose ``site`` is not the topic's) into an
:class:`Inbound` with ``msg=None`` and the error, which the writer quarantines with its topic
and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import messages, topics
from shared.errors import WireError

EdgeMessage = messages.DataBatch | messages.Status | messages.Birth


@dataclass(frozen=True)
class Inbound:
    topic: str
    site: str | None
    msg: EdgeMessage | None
    payload: bytes
    """Kept only when ``msg`` is None (for the quarantine)."""
    error: str
    received: float
    """Wall-clock time the hub took the message from the broker."""
    mid: int
    """MQTT packet id, for the PUBACK after commit (0 for QoS 0)."""
    generation: int
    """Which connection the message came on (a PUBACK goes only to that one)."""

    @property
    def weight(self) -> int:
        return len(self.msg.records) if isinstance(self.msg, messages.DataBatch) else 1


_KINDS: dict[topics.SiteChannel, type[EdgeMessage]] = {
    topics.SiteChannel.DATA: messages.DataBatch,
    topics.SiteChannel.STATUS: messages.Status,
    topics.SiteChannel.BIRTH: messages.Birth,
}


def classify(topic: str, payload: bytes, *, received: float, mid: int = 0, generation: int = 0) -> Inbound:
    def bad(error: str, site: str | None = None) -> Inbound:
        return Inbound(topic, site, None, payload, error, received, mid, generation)

    try:
        parsed = topics.parse(topic)
    except WireError as exc:
        return bad(str(exc))
    if not isinstance(parsed, topics.SiteTopic) or parsed.channel not in _KINDS:
        return bad(f"not an edge-to-hub topic: {topic}")
    try:
        msg: EdgeMessage = messages.decode(_KINDS[parsed.channel], payload)  # type: ignore[type-var]
    except WireError as exc:
        return bad(str(exc), parsed.site)
    if msg.site != parsed.site:
        return bad(f"message for site {msg.site!r} on {parsed.site!r}'s topic", parsed.site)
    return Inbound(topic, parsed.site, msg, b"", "", received, mid, generation)
