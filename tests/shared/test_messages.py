"""Every wire message round-trips; every malformed payload is one clear WireError."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import messages as m
from shared.errors import WireError
from tests.shared import strategies as s


@pytest.mark.parametrize(
    ("kind", "strategy"),
    [
        (m.Status, s.statuses),
        (m.Birth, s.births),
        (m.DataBatch, s.batches),
        (m.Command, s.commands),
        (m.Ack, s.acks),
        (m.HubStatus, s.hub_statuses),
    ],
)
def test_every_message_type_round_trips(kind: type[m.Message], strategy: st.SearchStrategy[m.Message]) -> None:
    """decode(encode(msg)) == msg for arbitrary valid messages of each type."""

    @given(strategy)
    def check(msg: m.Message) -> None:
        assert m.decode(kind, m.encode(msg)) == msg  # type: ignore[type-var]

    check()


def _batch_json() -> dict[str, object]:
    return {
        "v": 1,
        "site": "gg-suwon-up-0031",
        "boot": "b",
        "records": [
            {"type": "reading", "seq": 7, "ts": 1.5, "prio": "telemetry", "device": "gauge",
             "point": "water_depth_cm", "value": 3.0, "quality": "good"}
        ],
    }


def test_valid_batch_json_decodes() -> None:
    """The control for the malformed cases below."""
    batch = m.decode(m.DataBatch, json.dumps(_batch_json()).encode())
    assert isinstance(batch.records[0], m.Reading)
    assert batch.records[0].seq == 7


def _mutated(path: list[str | int], value: object, delete: bool = False) -> bytes:
    doc: object = _batch_json()
    target = doc
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    if delete:
        del target[path[-1]]  # type: ignore[attr-defined]
    else:
        target[path[-1]] = value  # type: ignore[index]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "malformed"),
        (b"", "truncated"),
        (b"[1, 2]", "Expected `object`"),
        (_mutated(["v"], 2), "unsupported message version 2"),
        (_mutated(["v"], "1"), "Expected `int`"),
        (_mutated(["records", 0, "seq"], None, delete=True), "missing required field `seq`"),
        (_mutated(["records", 0, "seq"], "seven"), "$.records[0].seq"),
        (_mutated(["records", 0, "seq"], -1), ">= 0"),
        (_mutated(["records", 0, "quality"], "excellent"), "$.records[0].quality"),
        (_mutated(["records", 0, "type"], "rumour"), "$.records[0].type"),
        (_mutated(["site"], "gg/other/#"), "$.site"),
        (_mutated(["surprise"], 1), "unknown field `surprise`"),
        (
            b'{"v":1,"site":"gg-x-01","boot":"b","records":[{"type":"event","seq":1,"ts":1,'
            b'"prio":"event","kind":"k","detail":"' + b"x" * (300 * 1024) + b'"}]}',
            "over the",
        ),
    ],
    ids=["bad-json", "empty", "not-object", "wrong-version", "version-type", "missing-field",
         "wrong-type", "negative-seq", "bad-enum", "unknown-record", "bad-site-id", "unknown-field", "oversize"],
)
def test_malformed_payload_is_one_wire_error(payload: bytes, expected: str) -> None:
    """Each kind of bad payload raises WireError naming the message type and the problem."""
    with pytest.raises(WireError) as info:
        m.decode(m.DataBatch, payload)
    assert str(info.value).startswith("DataBatch: ")
    assert expected in str(info.value)
    # translated at the seam: the library's exception is the cause, not what callers see
    assert type(info.value) is WireError


def test_encode_refuses_oversize_message() -> None:
    """A batch too large for the wire is refused when encoding, not truncated."""
    big = m.DataBatch(site="gg-x-01", boot="b", records=[
        m.Event(seq=i, ts=0.0, prio=m.Priority.EVENT, kind="k", detail="x" * 1000) for i in range(300)
    ])
    with pytest.raises(WireError, match="over the"):
        m.encode(big)


def test_ack_needs_a_position() -> None:
    """An ack with neither through_seq, resend_from nor a rebirth ask says nothing and is refused;
    a rebirth ask alone is an ack."""
    with pytest.raises(WireError, match="through_seq, resend_from or rebirth"):
        m.decode(m.Ack, b'{"v":1,"site":"gg-x-01"}')
    assert m.decode(m.Ack, b'{"v":1,"site":"gg-x-01","rebirth":true}').rebirth


def test_reply_status_terminality() -> None:
    """Only `received` is not terminal."""
    assert [s for s in m.ReplyStatus if not s.is_terminal] == [m.ReplyStatus.RECEIVED]


def _stored(record: m.Record) -> bytes:
    """A record as the edge's outbox stores it: never flagged historical."""
    return m.encode_record(msgspec.structs.replace(record, historical=False))


@given(batch=s.batches, historical=st.booleans())
def test_a_batch_of_stored_records_decodes_as_the_batch_msgspec_encodes(batch: m.DataBatch, historical: bool) -> None:
    """encode_batch over stored record bytes gives a payload that decodes to the same DataBatch
    as encode() of it (byte for byte when not historical)."""
    records = [msgspec.structs.replace(r, historical=historical) for r in batch.records]
    expected = msgspec.structs.replace(batch, records=records)
    payload, n = m.encode_batch(batch.site, batch.boot, [_stored(r) for r in batch.records],
                                floor_seq=batch.floor_seq, epoch=batch.epoch, thinned=batch.thinned,
                                historical=historical)
    assert n == len(records)
    assert m.decode(m.DataBatch, payload) == m.decode(m.DataBatch, m.encode(expected)) == expected
    if not historical:
        assert payload == m.encode(expected)


@given(batch=s.batches.filter(lambda b: len(b.records) >= 2), historical=st.booleans())
def test_a_batch_of_stored_records_stops_before_max_bytes(batch: m.DataBatch, historical: bool) -> None:
    """Records are taken in order while the payload fits; at least one always is."""
    stored = [_stored(r) for r in batch.records]
    whole, _ = m.encode_batch(batch.site, batch.boot, stored, floor_seq=batch.floor_seq, epoch=batch.epoch,
                              thinned=batch.thinned, historical=historical)
    payload, n = m.encode_batch(batch.site, batch.boot, stored, floor_seq=batch.floor_seq, epoch=batch.epoch,
                                thinned=batch.thinned, historical=historical, max_bytes=len(whole) - 1)
    assert 1 <= n < len(stored)
    assert len(payload) < len(whole)
    got = m.decode(m.DataBatch, payload)
    assert [r.seq for r in got.records] == [r.seq for r in batch.records[:n]]
    assert all(r.historical is historical for r in got.records)
    tiny, one = m.encode_batch(batch.site, batch.boot, stored, floor_seq=batch.floor_seq, epoch=batch.epoch,
                               thinned=batch.thinned, max_bytes=1)
    assert one == 1
    assert m.decode(m.DataBatch, tiny).records == [msgspec.structs.replace(batch.records[0], historical=False)]
