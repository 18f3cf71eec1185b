"""A simulated ONVIF camera (Profile S subset), written from the ONVIF specifications.

``jikimi sim camera --onvif HOST:PORT --id CAM --user U --password P [--presets N]`` serves SOAP 1.2
over HTTP:

- ``/onvif/device_service`` (Device, ``tds``): GetSystemDateAndTime, GetCapabilities, GetServices,
  GetDeviceInformation;
- ``/onvif/media_service`` (Media, ``trt``): GetProfiles, GetSnapshotUri, GetStreamUri;
- ``/onvif/ptz_service`` (PTZ, ``tptz``): GetPresets, GotoPreset, GetStatus. A GotoPreset starts a
  move that takes ``travel_s``; GetStatus reports MoveStatus MOVING until then, IDLE after, and the
  preset is the camera's current one (shown in its pictures) once the move ends;
- ``/onvif/snapshot.jpg``: the picture (:func:`edge.sim.camera.render_snapshot`: the camera id, the time
  and the current preset), behind HTTP digest authentication (RFC 7616, MD5, qop=auth; a nonce
  lives ``DIGEST_NONCE_S`` and its count must grow, so a replayed header is refused).

Security, as the ONVIF Core specification asks (section 5.12):

- every SOAP request is authenticated with a WS-Security UsernameToken with PasswordDigest
  (``Base64(SHA-1(nonce + created + password))``), except the pre-authentication operations
  GetSystemDateAndTime, GetCapabilities and GetServices;
- a token whose Created lies more than ``MAX_SKEW_S`` from the camera's clock is refused, and a
  nonce is accepted once (remembered for twice the skew window, so a replay is refused until its
  Created is stale anyway);
- a body over ``MAX_BODY`` bytes is refused (413) before it is parsed; XML is parsed without DTDs,
  entities or network access, and any document type declaration is refused (SOAP 1.2 forbids them).

Refusals are SOAP 1.2 faults with ONVIF ``ter:`` subcodes: HTTP 400 for the sender's faults
(``ter:NotAuthorized``, ``ter:InvalidArgVal``, ``ter:WellFormed``), 500 for ``ter:ActionNotSupported``.
The RTSP stream is served by edge/sim/camera_rtsp.py, which reads the PTZ state here
(:meth:`OnvifCameraSim.preset_now`, safe from its thread); GetStreamUri answers ``stream_uri``
(without credentials, as cameras do: the client brings its own), and a camera without one
answers ``ter:ActionNotSupported``. A camera run with ``snapshot=False`` (``--no-snapshot``)
is one whose profile has no snapshot URI: GetSnapshotUri answers ``ter:ActionNotSupported``
and ``/onvif/snapshot.jpg`` is 404, so a client must take a frame of the stream instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from lxml import etree

from edge.sim.camera import render_snapshot

ENV: Final = "http://www.w3.org/2003/05/soap-envelope"
TDS: Final = "http://www.onvif.org/ver10/device/wsdl"
TRT: Final = "http://www.onvif.org/ver10/media/wsdl"
TPTZ: Final = "http://www.onvif.org/ver20/ptz/wsdl"
TT: Final = "http://www.onvif.org/ver10/schema"
TER: Final = "http://www.onvif.org/ver10/error"
WSSE: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST: Final = ("http://docs.oasis-open.org/wss/2004/01/"  # noqa: S105 - a type URI, not a password
                          "oasis-200401-wss-username-token-profile-1.0#PasswordDigest")

DEVICE_PATH: Final = "/onvif/device_service"
MEDIA_PATH: Final = "/onvif/media_service"
PTZ_PATH: Final = "/onvif/ptz_service"
SNAPSHOT_PATH: Final = "/onvif/snapshot.jpg"
PROFILE: Final = "profile_1"
REALM: Final = "jikimi-camera"

MAX_BODY: Final = 64 * 1024
"""No ONVIF request this camera understands comes near this; a larger body is refused unread."""
MAX_SKEW_S: Final = 300.0
"""How far a UsernameToken's Created may lie from the camera's clock (five minutes, as cameras do)."""
DIGEST_NONCE_S: Final = 60.0
PRE_AUTH: Final = frozenset({(TDS, "GetSystemDateAndTime"), (TDS, "GetCapabilities"), (TDS, "GetServices")})

_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                                 remove_comments=True, remove_pis=True)


class SoapFault(Exception):
    """A request the camera refuses: rendered as a SOAP 1.2 fault."""

    def __init__(self, subcode: str, reason: str, *, sender: bool = True, detail: str | None = None) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.detail = detail
        self.sender = sender


def _text(el: Any, path: str) -> str | None:
    found = el.find(path)
    if found is None or found.text is None:
        return None
    return str(found.text).strip()


def parse_envelope(body: bytes) -> Any:
    """The SOAP envelope of ``body``, or :class:`SoapFault` if it is not a safe, well-formed SOAP 1.2 one."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("ter:WellFormed", f"not well-formed XML: {exc}") from exc
    if root.getroottree().docinfo.doctype:
        raise SoapFault("ter:WellFormed", "a SOAP message must not contain a document type declaration")
    if root.tag != f"{{{ENV}}}Envelope":
        raise SoapFault("ter:WellFormed", f"not a SOAP 1.2 envelope: {root.tag}")
    return root


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken PasswordDigest: Base64(SHA-1(nonce + created + password))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode(),
                                         usedforsecurity=False).digest()).decode()


def _parse_created(text: str) -> float:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SoapFault("ter:NotAuthorized", f"Created is not a date-time: {text[:40]!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass
class Move:
    """A PTZ move under way: to ``preset``, done at ``until`` (``time.monotonic()``)."""

    preset: int
    until: float


@dataclass
class OnvifCameraSim:
    """One camera's state and its ONVIF services."""

    camera_id: str
    user: str
    password: str
    presets: int = 4
    travel_s: float = 1.0
    stream_uri: str | None = None
    snapshot_uri: bool = True
    """False: the media profile has no snapshot URI (GetSnapshotUri is refused)."""
    clock: Callable[[], float] = time.time
    preset: int | None = None
    history: list[int] = field(default_factory=list)
    frames: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Why requests were refused (fault subcode or HTTP reason), counted: what a test reads."""
    base_url: str = ""
    _move: Move | None = None
    _nonces: dict[bytes, float] = field(default_factory=dict)
    _digest_nonces: dict[str, float] = field(default_factory=dict)
    _digest_nc: dict[str, int] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        for path in (DEVICE_PATH, MEDIA_PATH, PTZ_PATH):
            app.router.add_post(path, self.soap)
        app.router.add_get(SNAPSHOT_PATH, self.snapshot)
        return app

    # --- PTZ state --------------------------------------------------------------------------------

    def _settle(self) -> None:
        move = self._move
        if move is not None and time.monotonic() >= move.until:
            self.preset = move.preset
            self._move = None

    def preset_now(self) -> int | None:
        """The preset the camera points at now; reads the state without changing it (any thread may call)."""
        move = self._move
        if move is not None and time.monotonic() >= move.until:
            return move.preset
        return self.preset

    @property
    def moving(self) -> bool:
        self._settle()
        return self._move is not None

    # --- SOAP -----------------------------------------------------------------------------------

    def _refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    async def soap(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            self._refuse("too_large")
            return web.Response(status=413, text=f"a request body is at most {MAX_BODY} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._refuse("too_large")
            return web.Response(status=413, text=f"a request body is at most {MAX_BODY} bytes")
        try:
            envelope = parse_envelope(body)
            op = envelope.find(f"{{{ENV}}}Body/*")
            if op is None:
                raise SoapFault("ter:WellFormed", "the SOAP Body is empty")
            qname = etree.QName(op)
            key = (qname.namespace, qname.localname)
            if key not in PRE_AUTH:
                self._authenticate(envelope)
            handler = self._handlers().get((request.path, *key))
            if handler is None:
                raise SoapFault("ter:ActionNotSupported", f"{qname.localname} is not supported at {request.path}",
                                sender=False)
            return _envelope(handler(op))
        except SoapFault as fault:
            self._refuse(fault.subcode)
            return _fault(fault)

    def _authenticate(self, envelope: Any) -> None:
        token = envelope.find(f"{{{ENV}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            raise SoapFault("ter:NotAuthorized", "this operation needs a WS-Security UsernameToken")
        user = _text(token, f"{{{WSSE}}}Username")
        password_el = token.find(f"{{{WSSE}}}Password")
        nonce_text = _text(token, f"{{{WSSE}}}Nonce")
        created = _text(token, f"{{{WSU}}}Created")
        if password_el is None or password_el.get("Type") != PASSWORD_DIGEST or nonce_text is None or created is None:
            raise SoapFault("ter:NotAuthorized", "a UsernameToken with PasswordDigest, Nonce and Created is required")
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
        except ValueError as exc:
            raise SoapFault("ter:NotAuthorized", "the Nonce is not Base64") from exc
        now = self.clock()
        if abs(now - _parse_created(created)) > MAX_SKEW_S:
            raise SoapFault("ter:NotAuthorized", "the token's Created is too far from the camera's clock")
        expected = password_digest(nonce, created, self.password)
        if user != self.user or not hmac.compare_digest(expected, (password_el.text or "").strip()):
            raise SoapFault("ter:NotAuthorized", "the user name or password is wrong")
        for old, seen in list(self._nonces.items()):
            if now - seen > 2 * MAX_SKEW_S:
                del self._nonces[old]
        if nonce in self._nonces:
            raise SoapFault("ter:NotAuthorized", "this nonce was used before (a replayed request)")
        self._nonces[nonce] = now

    def _handlers(self) -> dict[tuple[str, str, str], Callable[[Any], str]]:
        return {
            (DEVICE_PATH, TDS, "GetSystemDateAndTime"): self.get_system_date_and_time,
            (DEVICE_PATH, TDS, "GetCapabilities"): self.get_capabilities,
            (DEVICE_PATH, TDS, "GetServices"): self.get_services,
            (DEVICE_PATH, TDS, "GetDeviceInformation"): self.get_device_information,
            (MEDIA_PATH, TRT, "GetProfiles"): self.get_profiles,
            (MEDIA_PATH, TRT, "GetSnapshotUri"): self.get_snapshot_uri,
            (MEDIA_PATH, TRT, "GetStreamUri"): self.get_stream_uri,
            (PTZ_PATH, TPTZ, "GetPresets"): self.get_presets,
            (PTZ_PATH, TPTZ, "GotoPreset"): self.goto_preset,
            (PTZ_PATH, TPTZ, "GetStatus"): self.get_status,
        }

    # Device

    def get_system_date_and_time(self, op: Any) -> str:
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        return (f'<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>'
                f'<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>'
                f'<tt:TimeZone><tt:TZ>KST-9</tt:TZ></tt:TimeZone>'
                f'<tt:UTCDateTime><tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>'
                f'<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>'
                f'<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>'
                f'</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>')

    def get_capabilities(self, op: Any) -> str:
        b = self.base_url
        return (f'<tds:GetCapabilitiesResponse><tds:Capabilities>'
                f'<tt:Device><tt:XAddr>{b}{DEVICE_PATH}</tt:XAddr></tt:Device>'
                f'<tt:Media><tt:XAddr>{b}{MEDIA_PATH}</tt:XAddr><tt:StreamingCapabilities>'
                f'<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>'
                f'<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>'
                f'<tt:PTZ><tt:XAddr>{b}{PTZ_PATH}</tt:XAddr></tt:PTZ>'
                f'</tds:Capabilities></tds:GetCapabilitiesResponse>')

    def get_services(self, op: Any) -> str:
        services = ((TDS, DEVICE_PATH, 2), (TRT, MEDIA_PATH, 2), (TPTZ, PTZ_PATH, 2))
        items = "".join(f'<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.base_url}{path}'
                        f'</tds:XAddr><tds:Version><tt:Major>{major}</tt:Major><tt:Minor>60</tt:Minor>'
                        f'</tds:Version></tds:Service>' for ns, path, major in services)
        return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"

    def get_device_information(self, op: Any) -> str:
        return ('<tds:GetDeviceInformationResponse><tds:Manufacturer>jikimi</tds:Manufacturer>'
                '<tds:Model>sim-ptz</tds:Model><tds:FirmwareVersion>1.0</tds:FirmwareVersion>'
                f'<tds:SerialNumber>{escape(self.camera_id)}</tds:SerialNumber>'
                '<tds:HardwareId>sim</tds:HardwareId></tds:GetDeviceInformationResponse>')

    # Media

    def _profile(self, op: Any, ns: str) -> None:
        token = _text(op, f"{{{ns}}}ProfileToken")
        if token != PROFILE:
            raise SoapFault("ter:InvalidArgVal", f"no profile {token!r}", detail="ter:NoProfile")

    def get_profiles(self, op: Any) -> str:
        return (f'<trt:GetProfilesResponse><trt:Profiles token="{PROFILE}" fixed="true"><tt:Name>main</tt:Name>'
                '<tt:VideoSourceConfiguration token="vsc_1"><tt:Name>video</tt:Name><tt:UseCount>1</tt:UseCount>'
                '<tt:SourceToken>video_1</tt:SourceToken><tt:Bounds x="0" y="0" width="640" height="360"/>'
                '</tt:VideoSourceConfiguration>'
                '<tt:PTZConfiguration token="ptz_1"><tt:Name>ptz</tt:Name><tt:UseCount>1</tt:UseCount>'
                '<tt:NodeToken>ptz_node_1</tt:NodeToken></tt:PTZConfiguration>'
                '</trt:Profiles></trt:GetProfilesResponse>')

    @staticmethod
    def _media_uri(uri: str) -> str:
        return (f'<trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>'
                '<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>')

    def get_snapshot_uri(self, op: Any) -> str:
        self._profile(op, TRT)
        if not self.snapshot_uri:
            raise SoapFault("ter:ActionNotSupported", "this profile has no snapshot URI; take a frame of the stream",
                            sender=False)
        uri = self._media_uri(f"{self.base_url}{SNAPSHOT_PATH}")
        return f"<trt:GetSnapshotUriResponse>{uri}</trt:GetSnapshotUriResponse>"

    def get_stream_uri(self, op: Any) -> str:
        self._profile(op, TRT)
        if self.stream_uri is None:
            raise SoapFault("ter:ActionNotSupported", "this camera runs without an RTSP server", sender=False)
        return f"<trt:GetStreamUriResponse>{self._media_uri(self.stream_uri)}</trt:GetStreamUriResponse>"

    # PTZ

    def _position(self, preset: int | None) -> str:
        x = 0.0 if preset is None else -1.0 + 2.0 * (preset - 1) / max(1, self.presets)
        return f'<tt:PanTilt x="{x:.3f}" y="0"/><tt:Zoom x="0"/>'

    def get_presets(self, op: Any) -> str:
        self._profile(op, TPTZ)
        items = "".join(f'<tptz:Preset token="{n}"><tt:Name>Preset {n}</tt:Name>'
                        f'<tt:PTZPosition>{self._position(n)}</tt:PTZPosition></tptz:Preset>'
                        for n in range(1, self.presets + 1))
        return f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>"

    def goto_preset(self, op: Any) -> str:
        self._profile(op, TPTZ)
        token = _text(op, f"{{{TPTZ}}}PresetToken") or ""
        if not token.isdigit() or not 1 <= int(token) <= self.presets:
            raise SoapFault("ter:InvalidArgVal", f"no preset {token[:40]!r}", detail="ter:NoToken")
        self._settle()
        self._move = Move(int(token), time.monotonic() + self.travel_s)
        self.history.append(int(token))
        return "<tptz:GotoPresetResponse/>"

    def get_status(self, op: Any) -> str:
        self._profile(op, TPTZ)
        state = "MOVING" if self.moving else "IDLE"
        now = datetime.fromtimestamp(self.clock(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f'<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>{self._position(self.preset)}</tt:Position>'
                f'<tt:MoveStatus><tt:PanTilt>{state}</tt:PanTilt><tt:Zoom>IDLE</tt:Zoom></tt:MoveStatus>'
                f'<tt:UtcTime>{now}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>')

    # --- the snapshot, behind HTTP digest authentication ----------------------------------------------

    async def snapshot(self, request: web.Request) -> web.Response:
        if not self.snapshot_uri:
            return web.Response(status=404, text="this camera has no snapshot URI")
        if not self._digest_ok(request):
            self._refuse("http_digest")
            nonce = secrets.token_hex(16)
            self._digest_nonces[nonce] = self.clock()
            challenge = f'Digest realm="{REALM}", qop="auth", algorithm=MD5, nonce="{nonce}", opaque="{REALM}"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge}, text="unauthorized")
        self._settle()
        self.frames += 1
        data = await asyncio.to_thread(render_snapshot, self.camera_id, self.clock(), preset=self.preset,
                                       frame=self.frames)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def _digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        fields = _digest_fields(header[7:])
        now = self.clock()
        for old, issued in list(self._digest_nonces.items()):
            if now - issued > DIGEST_NONCE_S:
                del self._digest_nonces[old]
                self._digest_nc.pop(old, None)
        nonce = fields.get("nonce", "")
        if nonce not in self._digest_nonces or fields.get("username") != self.user:
            return False
        if fields.get("uri") != request.path_qs or fields.get("qop") != "auth":
            return False
        if fields.get("algorithm", "MD5").upper() != "MD5":
            return False

        def md5(s: str) -> str:
            return hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{self.user}:{REALM}:{self.password}")
        ha2 = md5(f"{request.method}:{fields['uri']}")
        nc_text = fields.get("nc", "")
        try:
            nc = int(nc_text, 16)
        except ValueError:
            return False
        expected = md5(f"{ha1}:{nonce}:{nc_text}:{fields.get('cnonce', '')}:auth:{ha2}")
        if not hmac.compare_digest(expected, fields.get("response", "")):
            return False
        if nc <= self._digest_nc.get(nonce, 0):
            return False  # a replayed Authorization header: the nonce count must grow (RFC 7616 3.4)
        self._digest_nc[nonce] = nc
        return True


def _digest_fields(text: str) -> dict[str, str]:
    """The ``key=value`` / ``key="value"`` pairs of a Digest Authorization header."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip().lower()
        i = eq + 1
        if i < n and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                break
            out[key] = text[i + 1:end]
            i = end + 1
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            out[key] = text[i:end].strip()
            i = end
    return out


_NS_DECLS: Final = (f'xmlns:env="{ENV}" xmlns:tds="{TDS}" xmlns:trt="{TRT}" xmlns:tptz="{TPTZ}" '
                    f'xmlns:tt="{TT}" xmlns:ter="{TER}"')


def _envelope(body: str, status: int = 200) -> web.Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {_NS_DECLS}><env:Body>{body}</env:Body></env:Envelope>'
    return web.Response(status=status, body=text.encode(), content_type="application/soap+xml", charset="utf-8")


def _fault(fault: SoapFault) -> web.Response:
    code = "env:Sender" if fault.sender else "env:Receiver"
    sub = f"<env:Value>{fault.subcode}</env:Value>"
    if fault.detail:
        sub += f"<env:Subcode><env:Value>{fault.detail}</env:Value></env:Subcode>"
    body = (f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode>{sub}</env:Subcode></env:Code>"
            f"<env:Reason><env:Text xml:lang={quoteattr('en')}>{escape(str(fault))}</env:Text></env:Reason>"
            f"</env:Fault>")
    return _envelope(body, 400 if fault.sender else 500)


@dataclass
class RunningOnvifCamera:
    sim: OnvifCameraSim
    host: str
    port: int

    @property
    def device_url(self) -> str:
        return f"http://{self.host}:{self.port}{DEVICE_PATH}"


@asynccontextmanager
async def serve(camera_id: str, *, user: str, password: str, host: str = "127.0.0.1", port: int = 0,
                presets: int = 4, travel_s: float = 1.0, stream_uri: str | None = None, snapshot_uri: bool = True,
                clock: Callable[[], float] = time.time) -> AsyncIterator[RunningOnvifCamera]:
    """Run one simulated ONVIF camera until the block ends (set ``sim.stream_uri`` once its RTSP server runs)."""
    sim = OnvifCameraSim(camera_id, user, password, presets=presets, travel_s=travel_s, stream_uri=stream_uri,
                         snapshot_uri=snapshot_uri, clock=clock)
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        sim.base_url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        yield RunningOnvifCamera(sim, host, bound)
    finally:
        await runner.cleanup()
