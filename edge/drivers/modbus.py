"""Modbus TCP and RTU drivers over pymodbus' async clients.

:class:`ModbusLine` owns one connection (a TCP socket or a serial port, real or pty) as
``async with``; every :class:`ModbusDevice` on that line shares it through the bus scheduler,
which serialises access. pymodbus retries are off (the scheduler and its breaker decide), so a
silent device costs exactly one timeout per request.

Errors are folded into the :mod:`edge.errors` tree at this seam:

* no answer in time -> :class:`DeviceTimeout`; bytes came but no valid frame (garbage, a bad
  CRC or MBAP header) -> :class:`FramingError` (seen through pymodbus' packet trace hook);
* an exception response -> :class:`DeviceException` with its code;
* not connected / OS errors -> :class:`DeviceError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from edge.drivers.codec import Value, decode, encode
from edge.drivers.planner import plan, plan_for
from edge.drivers.serial_line import Decoded
from edge.errors import (
    CodecError,
    DeviceError,
    DeviceException,
    DeviceTimeout,
    FramingError,
)
from shared.profiles import Point, Profile, Table, TransportSpec

log = logging.getLogger(__name__)


class ModbusLine:
    """One Modbus connection (TCP, or RTU on a serial port/pty) shared by its devices."""

    def __init__(self, client: Any, description: str) -> None:
        self._client = client
        self.description = description
        self._rx_bytes = 0

    @classmethod
    def tcp(cls, host: str, port: int, timeout_s: float = 0.5) -> ModbusLine:
        line = cls(None, f"tcp://{host}:{port}")
        line._client = AsyncModbusTcpClient(
            host,
            port=port,
            timeout=timeout_s,
            retries=0,
            trace_packet=line._trace,
            reconnect_delay=0.1,
            reconnect_delay_max=2.0,
        )
        return line

    @classmethod
    def rtu(cls, port: str, spec: TransportSpec, timeout_s: float | None = None) -> ModbusLine:
        line = cls(None, port)
        # A pty has no parity hardware and Linux refuses some parity settings on it (EINVAL);
        # the simulators' ptys carry bytes only, so ask for none there.
        parity = "N" if port.startswith("/dev/pts/") else spec.parity.value
        line._client = AsyncModbusSerialClient(
            port,
            framer=FramerType.RTU,
            baudrate=spec.baudrate,
            bytesize=spec.bytesize,
            parity=parity,
            stopbits=spec.stopbits,
            timeout=spec.timeout_s if timeout_s is None else timeout_s,
            retries=0,
            trace_packet=line._trace,
            reconnect_delay=0.1,
            reconnect_delay_max=2.0,
        )
        return line

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx_bytes = 0
        else:
            self._rx_bytes += len(data)
        return data

    async def __aenter__(self) -> ModbusLine:
        """Try to connect, but never fail: a device that cannot be reached at start is a
        ``comm_fail`` reading and an open breaker (edge/drivers/scheduler.py), not a stopped
        agent; every later request tries to connect again, paced by that breaker."""
        try:
            await self.connect()
        except DeviceError as exc:
            log.warning("modbus.connect_failed", extra={"line": self.description, "error": str(exc)})
        return self

    async def connect(self) -> None:
        """Connect now or raise :class:`DeviceError` saying why (the technician's tools ask first)."""
        if self._client.connected:
            return
        try:
            ok = await self._client.connect()
        except OSError as exc:
            raise DeviceError(f"{self.description}: cannot connect: {exc}") from exc
        _raise_a_lost_cancel()  # pymodbus connects under asyncio.wait_for too
        if not ok:
            raise DeviceError(f"{self.description}: cannot connect")

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one pymodbus request; translate every failure into the DeviceError tree."""
        if not self._client.connected:
            await self.connect()
        try:
            response = await getattr(self._client, method)(*args, **kwargs)
        except ModbusIOException as exc:
            if self._rx_bytes:
                raise FramingError(f"{self.description}: {self._rx_bytes} byte(s), no valid frame") from exc
            raise DeviceTimeout(f"{self.description}: no answer") from exc
        except ConnectionException as exc:
            raise DeviceError(f"{self.description}: not connected") from exc
        except ModbusException as exc:
            raise FramingError(f"{self.description}: {exc}") from exc
        except OSError as exc:
            raise DeviceError(f"{self.description}: {exc}") from exc
        _raise_a_lost_cancel()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise DeviceException(f"{self.description}: exception code {code}", code)
        return response


def _raise_a_lost_cancel() -> None:
    """Raise the cancellation pymodbus may have dropped.

    pymodbus waits for an answer with ``asyncio.wait_for``, which on Python 3.11 returns the
    answer and drops a cancel that arrives with it. The bus loop would then poll on for ever, and
    the agent's TaskGroup would wait for it: an agent polling every 25 ms ignored SIGTERM for
    minutes. The cancel was counted on the task, so it is raised here, after the answer. Inside
    an ``asyncio.timeout`` that expired, this is that timeout's cancel, and it ends as its
    ``TimeoutError``.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_READ = {
    Table.COIL: "read_coils",
    Table.DISCRETE: "read_discrete_inputs",
    Table.HOLDING: "read_holding_registers",
    Table.INPUT: "read_input_registers",
}


class ModbusDevice:
    """One Modbus device (a unit id on a line), read in planned blocks.

    Implements the bus scheduler's device interface (``requests_for``, ``read``, ``write``).
    """

    def __init__(self, name: str, profile: Profile, line: ModbusLine, unit_id: int | None = None) -> None:
        self.name = name
        self.profile = profile
        self.line = line
        self.unit_id = profile.transport.unit_id if unit_id is None else unit_id

    def requests_for(self, points: Sequence[Point]) -> tuple[tuple[Point, ...], ...]:
        """The points grouped into the fewest reads the device accepts."""
        return tuple(b.points for b in plan_for(points, self.profile.transport))

    async def read(self, points: Sequence[Point]) -> Mapping[str, Decoded]:
        """Read ``points`` (one block per group from :meth:`requests_for`)."""
        out: dict[str, Decoded] = {}
        spec = self.profile.transport
        for block in plan(points, spec.max_registers, spec.max_bits, spec.max_gap):
            response = await self.line.call(
                _READ[block.table], block.address, count=block.count, device_id=self.unit_id
            )
            if block.table.is_bits:
                words: list[int] = [int(b) for b in response.bits[: block.count]]
            else:
                words = list(response.registers)
            if len(words) < block.count:
                raise FramingError(f"{self.name}: asked {block.count}, got {len(words)}")
            for p in block.points:
                try:
                    out[p.name] = decode(p, block.words_of(p, words))
                except CodecError as exc:
                    out[p.name] = exc
        return out

    async def write(self, point: Point, value: Value) -> None:
        """Write one value (function 5, 6 or 16 as the point needs)."""
        if not point.writable or point.address is None:
            raise CodecError(f"{point.name} is not writable")
        words = encode(point, value)
        if point.table is Table.COIL:
            await self.line.call("write_coil", point.address, bool(words[0]), device_id=self.unit_id)
        elif len(words) == 1:
            await self.line.call("write_register", point.address, words[0], device_id=self.unit_id)
        else:
            await self.line.call("write_registers", point.address, list(words), device_id=self.unit_id)
