"""CAP 1.2: every message the hub renders validates against the OASIS schema; the reader is tolerant."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.cctv_geo import GeoPoint
from hub.forward import cap, capread
from hub.forward.cap import (
    AlertFacts,
    Area,
    Category,
    Certainty,
    Circle,
    MsgType,
    Polygon,
    Reference,
    Resource,
    ResponseType,
    Severity,
    Status,
    Text,
    Urgency,
)
from hub.forward.capread import CapSchema
from hub.forward.errors import CapError

KST = timezone(timedelta(hours=9))
SENT = datetime(2024, 8, 8, 15, 30, 0, tzinfo=KST)
PICTURE = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"


def facts(**kw: object) -> AlertFacts:
    base = AlertFacts(
        identifier="hub-test.0001",
        sender="hub-test@jikimi.example",
        sent=SENT,
        status=Status.ACTUAL,
        msg_type=MsgType.ALERT,
        event=Text("지하차도 침수", "Underpass flooding"),
        category=(Category.MET, Category.TRANSPORT),
        urgency=Urgency.IMMEDIATE,
        severity=Severity.EXTREME,
        certainty=Certainty.OBSERVED,
        headline=Text("권선 지하차도 침수", "Gwonseon underpass flooded"),
        description=Text("수위 15cm", "Water 15 cm deep"),
        areas=(Area(Text("권선 지하차도", "Gwonseon underpass"), circles=(Circle(GeoPoint(37.2636, 127.0286), 0.5),)),),
        response_types=(ResponseType.AVOID,),
        incidents=("hub-test.0001",),
        resources=(Resource(Text("CCTV 사진", "CCTV snapshot"), "image/jpeg", size=len(PICTURE),
                            uri="https://hub-test.example/api/evidence/1",
                            digest=hashlib.sha1(PICTURE, usedforsecurity=False).hexdigest(), deref=PICTURE),),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


FIRST = Reference("hub-test@jikimi.example", "hub-test.0001", "2024-08-08T15:30:00+09:00")


@pytest.mark.parametrize(
    ("msg_type", "references", "response"),
    [
        (MsgType.ALERT, (), ResponseType.EVACUATE),
        (MsgType.UPDATE, (FIRST,), ResponseType.SHELTER),
        (MsgType.CANCEL, (FIRST, Reference("hub-test@jikimi.example", "hub-test.0002", "2024-08-08T15:35:00+09:00")),
         ResponseType.ALL_CLEAR),
    ],
)
def test_alert_update_and_cancel_validate_against_the_oasis_schema(
    schema: CapSchema, msg_type: MsgType, references: tuple[Reference, ...], response: ResponseType
) -> None:
    f = facts(identifier=f"hub-test.{msg_type.value}", msg_type=msg_type, references=references,
              response_types=(response,))
    xml = cap.render(f)
    assert schema.errors(xml) == ()
    back = capread.read(xml)
    assert (back.identifier, back.msg_type, back.references) == (f.identifier, msg_type.value, references)
    assert [i.language for i in back.infos] == ["ko-KR", "en-US"]
    assert [i.response_types for i in back.infos] == [(response.value,)] * 2


def test_a_polygon_area_and_exercise_status_validate(schema: CapSchema) -> None:
    ring = Polygon.closed((GeoPoint(37.26, 127.02), GeoPoint(37.27, 127.02), GeoPoint(37.27, 127.04)))
    f = facts(status=Status.EXERCISE, areas=(Area(Text("권선구", "Gwonseon-gu"), polygons=(ring,)),))
    xml = cap.render(f)
    assert schema.errors(xml) == ()
    area = capread.read(xml).infos[0].areas[0]
    assert area.polygons == ("37.260000,127.020000 37.270000,127.020000 37.270000,127.040000 37.260000,127.020000",)
    assert capread.read(xml).status == "Exercise"


def test_the_resource_carries_the_pictures_sha1_digest_and_bytes(schema: CapSchema) -> None:
    res = capread.read(cap.render(facts())).infos[0].resources[0]
    assert res.deref == PICTURE
    assert res.digest == hashlib.sha1(PICTURE, usedforsecurity=False).hexdigest()
    assert res.size == len(PICTURE)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"msg_type": MsgType.UPDATE}, "must reference"),
        ({"references": (FIRST,)}, "an Alert references nothing"),
        ({"identifier": "has space"}, "identifier"),
        ({"sender": "a,b"}, "sender"),
        ({"incidents": ("x y",)}, "incident"),
        ({"areas": (Area(Text("a", "a"), polygons=(Polygon((GeoPoint(1, 1), GeoPoint(1, 2), GeoPoint(2, 2))),)),)},
         "polygon"),
        ({"sent": datetime(2024, 8, 8, 15, 30)}, "offset"),
    ],
)
def test_cap_rules_the_schema_does_not_check_are_refused(change: dict[str, object], problem: str) -> None:
    with pytest.raises(CapError, match=problem):
        cap.render(facts(**change))


xml_text = st.text(st.characters(codec="utf-8"), max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    headline=xml_text,
    description=xml_text,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    radius=st.floats(0, 100),
    status=st.sampled_from([Status.ACTUAL, Status.EXERCISE]),
    msg=st.sampled_from([MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL]),
    seconds=st.integers(0, 2_000_000_000),
    offset_min=st.integers(-12 * 60, 14 * 60),
)
def test_any_facts_render_to_a_valid_message(schema: CapSchema, headline: str, description: str, lat: float,
                                             lon: float, radius: float, status: Status, msg: MsgType, seconds: int,
                                             offset_min: int) -> None:
    sent = datetime.fromtimestamp(seconds, tz=timezone(timedelta(minutes=offset_min)))
    f = facts(headline=Text(headline, headline), description=Text(description, "d"), status=status, msg_type=msg,
              references=() if msg is MsgType.ALERT else (FIRST,), sent=sent,
              areas=(Area(Text("곳", "place"), circles=(Circle(GeoPoint(lat, lon), radius),)),))
    xml = cap.render(f)
    assert schema.errors(xml) == ()
    assert capread.read(xml).sent == cap.cap_time(sent)


def _examples(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "cap").glob("examples_*/*.xml"))


def test_the_oasis_and_real_world_examples_are_read_and_all_but_the_signed_one_validate(
    schema: CapSchema, shared_data: Path
) -> None:
    files = _examples(shared_data)
    assert len(files) == 8
    invalid = []
    for path in files:
        data = path.read_bytes()
        msg = capread.read(data)
        assert all((msg.identifier, msg.sender, msg.sent, msg.infos)), path.name
        if schema.errors(data):
            invalid.append(path.name)
    assert invalid == ["canada_signed.xml"]
    signed = capread.read((shared_data / "cap" / "examples_realworld" / "canada_signed.xml").read_bytes())
    assert signed.signed
    assert len(signed.references) == 9


def test_the_reader_refuses_a_dtd_rather_than_expand_entities() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
            b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&y;</identifier></alert>')
    with pytest.raises(CapError, match="DTD"):
        capread.read(bomb)


@pytest.mark.parametrize("encoding", ["UTF-6", "utf-7", "rot13", "idna", "undefined"])
def test_an_xml_encoding_python_cannot_read_is_a_cap_error(encoding: str) -> None:
    # Found by jikimi bench fuzz (cap_read): expat passed the codec's LookupError/ValueError through.
    data = (f'<?xml version="1.0" encoding="{encoding}"?>'
            '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</identifier></alert>').encode()
    with pytest.raises(CapError, match="encoding"):
        capread.read(data)


def test_the_reader_needs_identifier_sender_and_sent() -> None:
    with pytest.raises(CapError, match="sender, sent"):
        capread.read(b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</identifier></alert>')
    with pytest.raises(CapError, match="not a CAP alert"):
        capread.read(b"<feed/>")
