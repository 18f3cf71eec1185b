"""The simulator's control interface: a small HTTP API on loopback (aiohttp) that tests, the demo
and ``jikimi chaos`` share, instead of driving a simulator through its stdin.

``jikimi sim run ... --control 127.0.0.1:PORT`` (or :func:`serve_control` in-process) serves

- ``GET /state``: every device's physics (water, barrier), its current point values, the
  number of requests it answered, and the **writes it accepted from the bus** per point and per
  value — double actuations are counted here, at the device, not in the agent;
- ``POST /water`` ``{"depth_cm": 20.0}``: set the water depth (a replay series is dropped);
- ``POST /barrier`` ``{"action": "open"|"close"}``: move the barrier or gate as its cabinet's own
  panel would (not a bus write: it is not counted in ``writes``);
- ``POST /jam`` ``{"on": true}``: the motor stalls (``false`` clears the jam and the fault);
- ``POST /travel`` ``{"seconds": 3.0}``: the barrier's travel time.

Every ``POST`` body is a small JSON object of exactly those fields; anything else is a 400 with
the reason, and nothing changes. ``?unit=N`` picks a device on a multi-drop line (default: the
first). The API has no authentication, so it listens on loopback only: any other address is a
:class:`~shared.errors.ConfigError` before anything is served.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import msgspec
from aiohttp import web

from edge.drivers.codec import Value
from edge.sim.servers import SimDevice
from shared.addr import host_port
from shared.errors import ConfigError

MAX_BODY: Final = 1024
MAX_DEPTH_CM: Final = 100_000.0
MAX_TRAVEL_S: Final = 3600.0


class WaterBody(msgspec.Struct, forbid_unknown_fields=True):
    depth_cm: float


class BarrierBody(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["open", "close"]


class JamBody(msgspec.Struct, forbid_unknown_fields=True):
    on: bool


class TravelBody(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float


_B = TypeVar("_B", WaterBody, BarrierBody, JamBody, TravelBody)


def loopback(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of the control interface; a ConfigError unless HOST is a loopback address."""
    addr = host_port(text.removeprefix("tcp://"), lowest_port=0)
    if addr is None:
        raise ConfigError("--control", text, "expected HOST:PORT (port 0 picks a free one)")
    host = addr[0].strip("[]")
    if host != "localhost":
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError("--control", text, "the control interface has no authentication: loopback only")
    return host, addr[1]


def _json_value(value: Value) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def device_state(dev: SimDevice) -> dict[str, Any]:
    """What ``GET /state`` says about one device (physics advanced to now)."""
    dev.refresh()
    b = dev.physics.barrier
    by_value: dict[str, Counter[str]] = {}
    for point, value in dev.writes:
        by_value.setdefault(point, Counter())[str(value)] += 1
    return {
        "unit_id": dev.unit_id,
        "model": dev.profile.model,
        "kind": dev.profile.kind.value,
        "water_depth_cm": dev.physics.water.depth_cm,
        "barrier": {"state": b.state, "position": b.position, "travel_s": b.travel_s, "jammed": b.jammed,
                    "fault": b.fault, "local": b.local, "limit_closed": b.limit_closed,
                    "limit_open": b.limit_open},
        "values": {p.name: _json_value(dev.value(p)) for p in dev.profile.polled},
        "requests": dev.requests,
        "writes": {point: sum(c.values()) for point, c in by_value.items()},
        "writes_by_value": {point: dict(c) for point, c in by_value.items()},
    }


class ControlApi:
    """The routes over a simulator's devices."""

    def __init__(self, devices: Sequence[SimDevice]) -> None:
        self.devices = list(devices)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/state", self.state)
        app.router.add_post("/water", self.water)
        app.router.add_post("/barrier", self.barrier)
        app.router.add_post("/jam", self.jam)
        app.router.add_post("/travel", self.travel)
        return app

    def _device(self, request: web.Request) -> SimDevice:
        unit = request.query.get("unit")
        if unit is None:
            return self.devices[0]
        found = next((d for d in self.devices if unit.isascii() and unit.isdigit() and d.unit_id == int(unit)), None)
        if found is None:
            raise _bad(f"no device with unit id {unit!r} here", status=404)
        return found

    async def state(self, request: web.Request) -> web.Response:
        unit = request.query.get("unit")
        devices = [self._device(request)] if unit is not None else self.devices
        return web.json_response({"devices": [device_state(d) for d in devices]})

    async def water(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        body = await _body(request, WaterBody)
        if not (math.isfinite(body.depth_cm) and 0.0 <= body.depth_cm <= MAX_DEPTH_CM):
            raise _bad(f"depth_cm must be a finite number in 0..{MAX_DEPTH_CM:g}")
        dev.refresh()
        dev.physics.water.series = ()
        dev.physics.water.depth_cm = body.depth_cm
        return web.json_response(device_state(dev))

    async def barrier(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        body = await _body(request, BarrierBody)
        dev.refresh()
        dev.physics.barrier.command(body.action)
        return web.json_response(device_state(dev))

    async def jam(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        body = await _body(request, JamBody)
        dev.refresh()
        dev.physics.barrier.jammed = body.on
        if not body.on:
            dev.physics.barrier.clear_jam()
        return web.json_response(device_state(dev))

    async def travel(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        body = await _body(request, TravelBody)
        if not (math.isfinite(body.seconds) and 0.0 < body.seconds <= MAX_TRAVEL_S):
            raise _bad(f"seconds must be a finite number in (0, {MAX_TRAVEL_S:g}]")
        dev.refresh()
        dev.physics.barrier.travel_s = body.seconds
        return web.json_response(device_state(dev))


def _bad(reason: str, status: int = 400) -> web.HTTPException:
    cls = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return cls(text=msgspec.json.encode({"error": reason}).decode(), content_type="application/json")


async def _body(request: web.Request, kind: type[_B]) -> _B:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise _bad(f"body: {exc}") from exc


@dataclass(frozen=True)
class RunningControl:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_control(devices: Sequence[SimDevice], host: str = "127.0.0.1",
                        port: int = 0) -> AsyncIterator[RunningControl]:
    """Serve the control API for ``devices`` on ``host:port`` (loopback only) until the block ends."""
    loopback(f"{host}:{port}")
    runner = web.AppRunner(ControlApi(devices).app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield RunningControl(host, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()
