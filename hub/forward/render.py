"""A planned message as the bytes one recipient's format wants (pure, but for CAP's signing step).

Payload *variants* are keyed ``format`` or ``format+pictures`` (CCTV pictures embedded), so a
message is rendered once per variant however many recipients share it. CAP is rendered by the
pure :mod:`hub.forward.cap`, signed with the hub's alert-signing key (the config's
:class:`~hub.forward.capsign.CapSigner`), and the *signed* document is checked against the
OASIS schema (the one given, else the one that ships with the package). An unsigned or invalid
CAP message is a bug, and is refused (:class:`CapError`) before it is stored rather than sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.forward import cap, keti, webhook
from hub.forward.capread import CapSchema, shipped_schema
from hub.forward.capsign import CapSigner
from hub.forward.config import Format, Recipient
from hub.forward.errors import CapError
from hub.forward.plan import Planned


@dataclass(frozen=True)
class Payload:
    variant: str
    body: bytes
    content_type: str


def variant(recipient: Recipient, planned: Planned) -> str:
    embeds = recipient.embed_evidence and any(r.deref is not None for r in planned.facts.resources)
    # a payload with a live-view link is that recipient's own (hub/forward/plan.py)
    linked = f"+link:{recipient.name}" if planned.links_for(recipient) else ""
    return recipient.format.value + ("+pictures" if embeds else "") + linked


def payload(planned: Planned, recipient: Recipient, schema: CapSchema | None = None,
            signer: CapSigner | None = None) -> Payload:
    facts = planned.facts_for(recipient)
    name = variant(recipient, planned)
    if recipient.format is Format.CAP:
        if signer is None:
            raise CapError(f"CAP message {facts.identifier} to {recipient.name}: refused unsigned "
                           "(no alert-signing key: [forward] signing_key and signing_cert)")
        body = signer.sign(cap.render(facts))
        (schema or shipped_schema()).check(body, f"CAP message {facts.identifier}")
        return Payload(name, body, cap.MIME)
    if recipient.format is Format.KETI:
        return Payload(name, keti.render(planned, facts), keti.MIME)
    return Payload(name, webhook.render(planned, facts), webhook.MIME)
