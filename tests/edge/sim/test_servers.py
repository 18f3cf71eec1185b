"""The simulators serve exactly the profile's points; faults apply at run time."""

from __future__ import annotations

import asyncio
import contextlib
import os

from edge.sim.servers import (
    ILLEGAL_ADDRESS,
    ILLEGAL_VALUE,
    Pty,
    RtuBus,
    SimDevice,
    crc16,
    rtu_frame,
    run_simulator,
)
from shared.profiles import Profile, Table


def test_crc16_matches_the_specifications_example() -> None:
    # Modbus over serial line spec: 01 03 00 00 00 01 -> CRC 0x0A84 (sent 84 0A)
    assert crc16(bytes.fromhex("010300000001")) == 0x0A84


def test_reads_outside_the_declared_map_answer_exception_2(flood: Profile) -> None:
    dev = SimDevice(flood)
    assert dev.read(Table.INPUT, 0, 3) != ILLEGAL_ADDRESS
    assert dev.read(Table.INPUT, 0, 4) == ILLEGAL_ADDRESS
    assert dev.read(Table.HOLDING, 5, 1) == ILLEGAL_ADDRESS


def test_the_plc_reads_unused_registers_inside_its_map_as_zero(underpass: Profile) -> None:
    dev = SimDevice(underpass)
    assert dev.read(Table.INPUT, 0, 6) == [0, 0, 0, 0, 0, 0]
    assert dev.read(Table.INPUT, 6, 1) == ILLEGAL_ADDRESS


def test_writes_need_writable_points_and_allowed_values(underpass: Profile) -> None:
    dev = SimDevice(underpass)
    assert dev.write(Table.HOLDING, 1, [100]) == ILLEGAL_ADDRESS  # close_depth_cm is read-only
    assert dev.write(Table.HOLDING, 0, [0]) == ILLEGAL_VALUE  # "none" is not an allowed command
    assert dev.write(Table.HOLDING, 0, [1]) is None
    assert dev.physics.barrier.state == "closing"


def test_an_rtu_bus_answers_only_its_units_and_survives_noise(flood: Profile) -> None:
    bus = RtuBus([SimDevice(flood, unit_id=1), SimDevice(flood, unit_id=2)])
    req = rtu_frame(2, bytes.fromhex("0400000001"))
    (reply,) = bus.feed(b"\x00\xff\x13" + req)
    assert reply[:3] == bytes([2, 4, 2])
    assert bus.feed(rtu_frame(9, bytes.fromhex("0400000001"))) == []


def test_stuck_and_sensor_fault_apply_to_register_reads(flood: Profile) -> None:
    dev = SimDevice(flood)
    dev.physics.water.depth_cm = 10.0
    dev.faults.stuck.add("water_depth_cm")
    assert dev.read(Table.INPUT, 0, 1) == [100]
    dev.physics.water.depth_cm = 20.0
    assert dev.read(Table.INPUT, 0, 1) == [100]
    dev.faults.clear()
    assert dev.read(Table.INPUT, 0, 1) == [200]
    dev.faults.sensor_fault.add("water_depth_cm")
    assert dev.read(Table.INPUT, 0, 1) == [65535]


async def test_a_simulator_serves_an_existing_serial_port(flood: Profile) -> None:
    """``sim run --serial DEV``: here DEV is a pty's far end and the test talks on its master."""
    line = Pty.open()
    try:
        async with run_simulator(flood, transport="serial", serial_device=line.path) as sim:
            sim.physics.water.depth_cm = 7.0
            os.write(line.master, rtu_frame(1, bytes.fromhex("0400000001")))
            os.set_blocking(line.master, False)
            reply = b""
            for _ in range(200):
                with contextlib.suppress(BlockingIOError):
                    reply += os.read(line.master, 64)
                if len(reply) >= 7:
                    break
                await asyncio.sleep(0.01)
        assert reply == rtu_frame(1, bytes([4, 2, 0, 70]))
    finally:
        line.close()
