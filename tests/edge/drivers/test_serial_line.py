"""The ASCII line protocol: framing round-trips, and the driver against the gate simulator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.drivers.readings import Quality, Reading
from edge.drivers.scheduler import BusScheduler
from edge.drivers.serial_line import SerialLineDevice, decode_text, frame, parse_reply, unframe
from edge.errors import CodecError, DeviceException, DeviceTimeout, FramingError
from edge.sim.servers import run_simulator
from shared.profiles import Checksum, Profile


@given(
    st.text(st.characters(exclude_characters="*\r\n", categories=["L", "N", "P", "S", "Zs"])),
    st.sampled_from(list(Checksum)),
)
def test_frames_round_trip(payload: str, kind: Checksum) -> None:
    assert unframe(frame(payload, kind), kind) == payload


def test_a_known_frame_and_a_corrupted_one() -> None:
    assert frame("01:R:GS", Checksum.XOR8) == b"01:R:GS*47\r\n"
    with pytest.raises(FramingError):
        unframe(b"01:R:GT*47\r\n", Checksum.XOR8)
    with pytest.raises(FramingError):
        unframe(b"01:R:GS\r\n", Checksum.XOR8)


@pytest.mark.parametrize("code", ["²", "9" * 5000, "-1", ""])
def test_an_error_reply_whose_code_is_no_plain_number_says_code_0(code: str) -> None:
    # Found by jikimi bench fuzz (serial_line): "²".isdigit() is true but int("²") raises ValueError.
    with pytest.raises(DeviceException) as info:
        parse_reply(frame(f"01:ER:{code}", Checksum.XOR8), Checksum.XOR8, 1, "gate")
    assert info.value.code == 0


def test_a_reply_is_parsed_into_its_body() -> None:
    assert parse_reply(frame("01:OK:GS:2", Checksum.SUM8), Checksum.SUM8, 1, "gate") == "GS:2"
    with pytest.raises(FramingError, match="unit"):
        parse_reply(frame("02:OK:GS:2", Checksum.SUM8), Checksum.SUM8, 1, "gate")
    with pytest.raises(FramingError, match="status"):
        parse_reply(frame("01:NO:GS:2", Checksum.SUM8), Checksum.SUM8, 1, "gate")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400"])
def test_a_non_finite_number_for_an_integer_point_is_a_codec_error(gate: Profile, text: str) -> None:
    # Found by jikimi bench fuzz (serial_line): decode_text let ValueError/OverflowError escape.
    assert isinstance(decode_text(gate.point("gate_state"), text), CodecError)
    assert isinstance(decode_text(gate.point("water_level_cm"), text), CodecError)


async def test_driver_reads_and_commands_the_river_gate(gate: Profile) -> None:
    async with run_simulator(gate, transport="pty") as sim, SerialLineDevice("rg-1", gate, sim.path) as dev:
        got = await dev.read(gate.polled)
        assert got["gate_state"] == (0, "open")
        await dev.write(gate.point("gate_cmd"), "close")
        await dev.write(gate.point("sign_message"), "하천 범람 위험: 진입 금지")
        got = await dev.read(gate.polled)
        assert got["gate_state"] == (2, "moving")
        assert got["sign_message"] == ("하천 범람 위험: 진입 금지",) * 2
        sim.physics.barrier.position, sim.physics.barrier.moving = 1.0, 0
        assert (await dev.read([gate.point("gate_state")]))["gate_state"] == (1, "closed")


async def test_line_faults_raise_device_errors(gate: Profile) -> None:
    async with (
        run_simulator(gate, transport="pty") as sim,
        SerialLineDevice("rg-1", gate, sim.path, timeout_s=0.1) as dev,
    ):
        points = [gate.point("gate_state")]
        sim.faults.silent = True
        with pytest.raises(DeviceTimeout):
            await dev.read(points)
        sim.faults.silent, sim.faults.bad_crc = False, True
        with pytest.raises(FramingError):
            await dev.read(points)
        sim.faults.bad_crc, sim.faults.exception = False, 4
        with pytest.raises(DeviceException):
            await dev.read(points)
        sim.faults.clear()
        # a value outside "allowed" is refused by the device
        with pytest.raises(DeviceException) as info:
            await dev.request("01:W:BC:7")
        assert info.value.code == 2


async def test_scheduler_over_the_line_protocol_flags_garbage(gate: Profile) -> None:
    readings: list[Reading] = []
    async with (
        run_simulator(gate, transport="pty") as sim,
        SerialLineDevice("rg-1", gate, sim.path, timeout_s=0.1) as dev,
    ):
        sched = BusScheduler([dev], sink=readings.append, clock=lambda: 0.0)
        sim.faults.garbage = True
        await sched.run_due()
    assert sched.counters("rg-1").framing_errors >= 1
    assert {r.quality for r in readings} == {Quality.COMM_FAIL}
