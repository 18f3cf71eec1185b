"""Live-view links in alerts (hub/forward/plan.py): a notice carrying a link goes to the link's
recipient alone, whose signed CAP message carries it as a schema-valid ``<resource>``; nobody
else's message, and no other format, carries it."""

from __future__ import annotations

from hub.forward import capread
from hub.forward.capread import CapSchema
from hub.forward.config import Format
from hub.forward.plan import Change, ViewLink, plan
from hub.forward.render import payload, variant
from tests.hub.forward.helpers import SITE, T0, config, notice, recipient, signer

URL = "https://hub-test.example:8443/live/" + "t" * 43
LINK = ViewLink("police-112", "SW-CAM-A", URL, T0 + 1800)


def test_a_link_goes_to_its_recipient_alone_as_a_cap_resource(schema: CapSchema) -> None:
    """The alarm's thread already went to the city centre and 112; the link's update goes to 112
    only, and its CAP message (signed, valid against the OASIS schema) has the link as a text/html
    resource with the URL and when it stops opening."""
    city = recipient("city", "https://city.example/cap")
    police = recipient("police-112", "https://police.example/cap")
    cfg = config(city, police)
    first = plan(notice(position=SITE), None, cfg, "id-1")
    assert first is not None
    assert {r.name for r in first.recipients} == {"city", "police-112"}
    later = plan(notice(key="camera-link:1", position=SITE, links=(LINK,)), first.thread, cfg, "id-2")
    assert later is not None
    assert [r.name for r in later.recipients] == ["police-112"]
    assert later.facts.references == first.thread.refs  # an update of the same thread
    body = payload(later, police, schema, signer()).body
    msg = capread.read(body)
    res = [r for r in msg.infos[0].resources if r.mime == "text/html"]
    assert [(r.uri, r.desc) for r in res] == [(URL, "CCTV SW-CAM-A 실시간 영상 링크 (2024-08-08 16:00:00+0900까지)")]
    assert URL not in payload(later, city, schema, signer()).body.decode()
    assert variant(police, later) != variant(city, later)  # stored apart: the city's payload never holds it


def test_only_cap_messages_carry_a_link(schema: CapSchema) -> None:
    """A 112 that takes the smart-city JSON or a webhook gets the update without the link (those
    formats list evidence only), and an escalation target's message is rendered without it."""
    for fmt in (Format.KETI, Format.WEBHOOK):
        police = recipient("police-112", "https://police.example/in", format=fmt)
        planned = plan(notice(position=SITE, links=(LINK,)), None, config(police), "id-1")
        assert planned is not None
        assert planned.links_for(police) == ()
        assert URL.encode() not in payload(planned, police, schema, signer()).body
    police = recipient("police-112", "https://police.example/cap", escalate_to="province")
    province = recipient("province", "https://province.example/cap")
    planned = plan(notice(position=SITE, links=(LINK,)), None, config(police, province), "id-1")
    assert planned is not None
    assert [r.name for r in planned.recipients] == ["police-112"]
    assert URL.encode() not in payload(planned, province, schema, signer()).body


def test_after_a_link_the_thread_still_tells_everyone_it_told() -> None:
    """The link's update went to 112 only, yet the thread still names the city centre: the clear
    that follows reaches both."""
    city = recipient("city", "https://city.example/cap")
    police = recipient("police-112", "https://police.example/cap")
    cfg = config(city, police)
    first = plan(notice(position=SITE), None, cfg, "id-1")
    assert first is not None
    linked = plan(notice(key="camera-link:1", position=SITE, links=(LINK,)), first.thread, cfg, "id-2")
    assert linked is not None
    assert [r.name for r in linked.recipients] == ["police-112"]
    cleared = plan(notice(Change.CLEAR, position=SITE), linked.thread, cfg, "id-3")
    assert cleared is not None
    assert {r.name for r in cleared.recipients} == {"city", "police-112"}
    assert cleared.facts.resources == ()  # the clear carries no link
