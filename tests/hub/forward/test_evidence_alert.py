"""An alarm at a site: the camera that faces it is picked, and its picture rides in the CAP alert
with a digest that matches the stored evidence."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import replace
from pathlib import Path

import aiohttp

from edge.sim import camera as camsim
from hub import receiver
from hub.cctv import CctvLinker
from hub.cctv_geo import Camera, CctvConfig, View
from hub.forward import capread, ledger
from hub.forward.capread import CapSchema
from hub.forward.deliver import Forwarder, HttpTransport
from hub.forward.tx import LocalWriter
from tests.hub.forward.helpers import SITE, Clock, FakeAudit, config, notice, offset, recipient


async def test_the_facing_cameras_snapshot_is_in_the_cap_alert_with_the_stored_digest(
    tmp_path: Path, schema: CapSchema, audit: FakeAudit, clock: Clock
) -> None:
    async with camsim.serve("SW-CCTV-0012", clock=clock) as facing, camsim.serve("SW-CCTV-0007") as away, \
            receiver.serve(schema=schema, strict=True) as centre, \
            LocalWriter.open(tmp_path / "hub.db", audit) as db, \
            aiohttp.ClientSession() as http, HttpTransport.open() as transport:
        cameras = (
            # nearer, but looking away from the site
            Camera("SW-CCTV-0007", offset(SITE, 35, 90), (View(90, 60),), away.snapshot_url),
            # further, looking at the site (it is west of the camera)
            Camera("SW-CCTV-0012", offset(SITE, 80, 90), (View(265, 60),), facing.snapshot_url),
        )
        linker = CctvLinker(CctvConfig(cameras=cameras, evidence_dir=tmp_path / "evidence", max_cameras=1),
                            db, http, clock=clock)
        capture = await linker.capture(SITE, "alarm:1")
        (ev,) = capture.evidence
        assert ev.camera_id == "SW-CCTV-0012"
        assert away.sim.frames == 0

        cfg = config(recipient("centre", centre.url, embed_evidence=True),
                     recipient("police-112", centre.url.replace("/alerts", "/"), embed_evidence=False))
        fwd = Forwarder(cfg, db, transport, clock=clock, schema=schema)
        sent = await fwd.enqueue(replace(notice(), evidence=capture.evidence), pictures=capture.pictures)
        assert sent is not None
        for _ in range(5):
            await fwd.step()
        (got,) = centre.alerts()  # both recipients post to this centre: deduped by identifier
        assert got.identifier == sent.identifier
        assert got.valid
        assert got.receptions == 2
        stored = (tmp_path / "evidence" / ev.path).read_bytes()
        variants: dict[str, bytes] = {}
        for v in ("cap+pictures", "cap"):
            variants[v] = await db.read(functools.partial(ledger.payload_of, identifier=sent.identifier,
                                                          variant_name=v))

    assert hashlib.sha256(stored).hexdigest() == ev.sha256
    for name, xml in variants.items():
        assert schema.errors(xml) == ()
        for info in capread.read(xml).infos:
            (res,) = info.resources
            assert res.digest == ev.sha1 == hashlib.sha1(stored, usedforsecurity=False).hexdigest()
            assert res.size == len(stored)
            assert res.mime == "image/jpeg"
            assert res.uri == f"https://hub-test.example/api/evidence/{ev.id}"
            if name == "cap+pictures":
                assert res.deref == stored
                assert base64.b64encode(stored).decode() in xml.decode()
            else:
                assert res.deref is None
    assert audit.actions("cctv.") == ["cctv.capture"]
