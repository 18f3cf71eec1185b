"""Pure: a planned message as the bytes one recipient's format wants.

Payload *variants* are keyed ``format`` or ``format+pictures`` (CCTV pictures embedded), so a
message is rendered once per variant however many recipients share it. CAP is checked against
the OASIS schema when one is given: an invalid message is a bug, and is refused before it is
stored rather than sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.forward import cap, keti, webhook
from hub.forward.capread import CapSchema
from hub.forward.config import Format, Recipient
from hub.forward.plan import Planned


@dataclass(frozen=True)
class Payload:
    variant: str
    body: bytes
    content_type: str


def variant(recipient: Recipient, planned: Planned) -> str:
    embeds = recipient.embed_evidence and any(r.deref is not None for r in planned.facts.resources)
    return recipient.format.value + ("+pictures" if embeds else "")


def payload(planned: Planned, recipient: Recipient, schema: CapSchema | None = None) -> Payload:
    facts = planned.facts_for(recipient)
    name = variant(recipient, planned)
    if recipient.format is Format.CAP:
        body = cap.render(facts)
        if schema is not None:
            schema.check(body, f"CAP message {facts.identifier}")
        return Payload(name, body, cap.MIME)
    if recipient.format is Format.KETI:
        return Payload(name, keti.render(planned, facts), keti.MIME)
    return Payload(name, webhook.render(planned, facts), webhook.MIME)
