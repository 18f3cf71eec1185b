"""The Modbus drivers against the simulators over TCP and a pty RTU line, and third-party
clients (pymodbus' own client, mbpoll) reading the simulators at the profile's addresses."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from edge.drivers.modbus import ModbusDevice, ModbusLine
from edge.errors import DeviceException, DeviceTimeout, FramingError
from edge.sim.servers import run_simulator
from shared.profiles import Profile


async def test_tcp_driver_reads_and_writes_the_underpass_plc(underpass: Profile) -> None:
    async with run_simulator(underpass, transport="tcp") as sim:
        sim.physics.water.depth_cm = 17.3
        async with ModbusLine.tcp(sim.host, sim.port) as line:
            dev = ModbusDevice("up-1", underpass, line)
            got = await dev.read(underpass.polled)
            assert got["water_depth_cm"] == (173, 17.3)
            assert got["barrier_state"] == (0, "open")
            assert got["limit_open"] == (1, True)
            assert got["mode"] == (0, "remote")
            await dev.write(underpass.point("barrier_cmd"), "close")
            assert sim.physics.barrier.state == "closing"
            assert (await dev.read([underpass.point("barrier_state")]))["barrier_state"] == (1, "closing")


async def test_a_stop_that_arrives_with_the_answer_is_not_lost(underpass: Profile) -> None:
    """pymodbus waits for an answer with ``asyncio.wait_for``, which on Python 3.11 returns the
    answer and drops a cancel that arrives with it; the bus loop, and the agent, would never stop.
    The cancel comes here in the very callback that delivers the answer."""
    async with run_simulator(underpass, transport="tcp") as sim, ModbusLine.tcp(sim.host, sim.port) as line:
        dev = ModbusDevice("up-1", underpass, line)
        poller: asyncio.Task[object] | None = None
        trace = line._client.ctx.trace_packet

        def cancel_with_the_answer(sending: bool, data: bytes) -> bytes:
            if not sending and poller is not None:
                poller.cancel()
            return trace(sending, data)  # type: ignore[no-any-return]

        line._client.ctx.trace_packet = cancel_with_the_answer
        poller = asyncio.create_task(dev.read(underpass.polled))
        with pytest.raises(asyncio.CancelledError):
            await poller
        assert poller.cancelled()
        line._client.ctx.trace_packet = trace
        assert (await dev.read(underpass.polled))["barrier_state"] == (0, "open")  # the line serves on


async def test_rtu_driver_reads_swapped_floats_over_a_pty(displacement: Profile) -> None:
    async with run_simulator(displacement, transport="pty") as sim:
        sim.physics.slope.displacement_mm = -12.25
        async with ModbusLine.rtu(sim.path, displacement.transport) as line:
            got = await ModbusDevice("dx-1", displacement, line).read(displacement.polled)
    assert got["displacement_mm"] == (-12.25, -12.25)
    assert got["temperature_c"] == (14.0, 14.0)


async def test_rtu_faults_fold_into_the_device_error_tree(flood: Profile) -> None:
    async with (
        run_simulator(flood, transport="pty") as sim,
        ModbusLine.rtu(sim.path, flood.transport, timeout_s=0.1) as line,
    ):
        dev = ModbusDevice("fa-1", flood, line)
        points = [flood.point("water_depth_cm")]
        sim.faults.silent = True
        with pytest.raises(DeviceTimeout):
            await dev.read(points)
        sim.faults.silent, sim.faults.bad_crc = False, True
        with pytest.raises(FramingError):
            await dev.read(points)
        sim.faults.bad_crc, sim.faults.garbage = False, True
        with pytest.raises(FramingError):
            await dev.read(points)
        sim.faults.garbage, sim.faults.exception = False, 4
        with pytest.raises(DeviceException) as info:
            await dev.read(points)
        assert info.value.code == 4
        sim.faults.clear()
        assert (await dev.read(points))["water_depth_cm"] == (0, 0.0)


async def test_undeclared_registers_answer_illegal_address(flood: Profile) -> None:
    async with run_simulator(flood, transport="pty") as sim, ModbusLine.rtu(sim.path, flood.transport) as line:
        with pytest.raises(DeviceException) as info:
            await line.call("read_input_registers", 3, count=1, device_id=1)
    assert info.value.code == 2


async def test_pymodbus_client_reads_the_tcp_simulator_at_declared_addresses(
    underpass: Profile,
) -> None:
    async with run_simulator(underpass, transport="tcp") as sim:
        sim.physics.water.depth_cm = 22.4
        sim.physics.barrier.fault = True
        client = AsyncModbusTcpClient(sim.host, port=sim.port, timeout=1)
        await client.connect()
        try:
            depth = underpass.point("water_depth_cm")
            state = underpass.point("barrier_state")
            fault = underpass.point("motor_fault")
            rr = await client.read_input_registers(depth.address or 0, count=1, device_id=1)
            assert rr.registers == [224]
            rr = await client.read_input_registers(state.address or 0, count=1, device_id=1)
            assert rr.registers == [state.values["fault"]]
            rb = await client.read_discrete_inputs(fault.address or 0, count=1, device_id=1)
            assert rb.bits[0] is True
        finally:
            client.close()


async def test_pymodbus_client_decodes_the_rtu_simulators_swapped_floats(
    displacement: Profile,
) -> None:
    async with run_simulator(displacement, transport="pty") as sim:
        sim.physics.slope.displacement_mm = 3.5
        client = AsyncModbusSerialClient(sim.path, baudrate=19200, parity="N", timeout=1)
        await client.connect()
        try:
            p = displacement.point("displacement_mm")
            rr = await client.read_input_registers(p.address or 0, count=2, device_id=2)
            value = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32, word_order="little")
        finally:
            client.close()
    assert value == 3.5


async def mbpoll(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out.decode()
    return out.decode()


needs_mbpoll = pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed")


@needs_mbpoll
async def test_mbpoll_reads_the_tcp_simulator(underpass: Profile) -> None:
    async with run_simulator(underpass, transport="tcp") as sim:
        sim.physics.water.depth_cm = 31.7
        depth = underpass.point("water_depth_cm")
        out = await mbpoll(
            "-m",
            "tcp",
            "-p",
            str(sim.port),
            "-a",
            "1",
            "-0",
            "-t",
            "3",
            "-r",
            str(depth.address),
            "-c",
            "1",
            "-1",
            "-o",
            "2",
            sim.host,
        )
    assert f"[{depth.address}]: \t317" in out


@needs_mbpoll
async def test_mbpoll_reads_the_rtu_simulator_on_a_pty(displacement: Profile) -> None:
    async with run_simulator(displacement, transport="pty") as sim:
        sim.physics.slope.displacement_mm = 42.5
        p = displacement.point("displacement_mm")
        # mbpoll's float default is the low word first, as this profile declares.
        out = await mbpoll(
            "-m",
            "rtu",
            "-b",
            "19200",
            "-P",
            "none",
            "-a",
            "2",
            "-0",
            "-t",
            "3:float",
            "-r",
            str(p.address),
            "-c",
            "1",
            "-1",
            "-o",
            "2",
            sim.path,
        )
    assert f"[{p.address}]: \t42.5" in out
