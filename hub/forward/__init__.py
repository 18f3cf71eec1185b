"""Alerts out (DESIGN §6): CAP 1.2, the smart-city platform event and webhooks, per recipient,
through a durable outbox with retries, acknowledgements and escalation.

Modules, pure ones first:

    cap.py       pure: CAP 1.2 XML rendered from frozen AlertFacts
    capread.py   the OASIS schema (xmlschema) and a tolerant reader for incoming CAP
    capsign.py   XML-DSig: the hub's alert-signing key signs CAP; a receiver verifies with a CA file
    plan.py      pure: a Notice (alarm raised/changed/cleared, operation) → the message and recipients
    keti.py      pure: the smart-city platform event JSON
    webhook.py   pure: the plain JSON webhook
    render.py    a planned message as one recipient's bytes (CAP signed, then schema-checked)
    policy.py    pure: acknowledgement, retry, failure and escalation decisions
    config.py    the [forward] config (recipients)
    outbox.py    the durable outbox in the hub's database (tables from hub/migrations.py)
    ledger.py    the outbox read back: deliveries, attempts, payloads (tools, tests)
    deliver.py   the delivery loop (aiohttp, TLS 1.3) and the Forwarder the hub runs
    tx.py        the write seam (the hub's writer, or a LocalWriter) and the audit Protocol
    cli.py       ``jikimi receiver`` and ``jikimi sim camera``

The hub's side, in short::

    fwd = Forwarder(config.forward, writer, transport, escalation=raise_console_alarm, schema=CapSchema())
    tg.create_task(fwd.run(), name="forwarder")
    await fwd.enqueue(Notice(...), pictures=capture.pictures)   # or outbox.enqueue(tx, ...) + fwd.wake()
"""
