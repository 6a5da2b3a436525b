"""TensorBoard event files of scalars, written and read without TensorFlow or the tensorboard package.

An event file is a TFRecord stream: each record is ``uint64 length, uint32 masked_crc32c(length), data,
uint32 masked_crc32c(data)`` (little-endian), and each record's data is an ``Event`` protocol buffer. Only
the few fields a scalar needs are encoded here, by hand (the protobuf wire format is stable and public):

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

The first record carries ``file_version = "brain.Event:2"``, as TensorBoard's own writers do.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from peernet.errors import ConfigError

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # the Castagnoli polynomial, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: the checksum TFRecord uses (zlib's crc32 is another polynomial)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 as protobuf writes it: a negative number as its two's complement
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, scalars: dict[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    """One Event: a file version, or ``scalars`` (tag -> value) at ``step``."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if scalars:
        values = b"".join(_field(1, _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
                          for tag, value in scalars.items())
        out += _field(5, values)
    return out


def write_record(fh: BinaryIO, data: bytes) -> None:
    length = struct.pack("<Q", len(data))
    fh.write(length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data)))


class EventWriter:
    """Appends scalar events to a new ``events.out.tfevents.<time>.<host>`` file in ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = directory / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._fh = self.path.open("wb")
        write_record(self._fh, encode_event(now, 0, file_version=FILE_VERSION))

    def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        write_record(self._fh, encode_event(time.time() if wall_time is None else wall_time, step, scalars=values))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Event:
    wall_time: float
    step: int
    file_version: str | None
    scalars: dict[str, float]


def read_records(path: str | Path) -> Iterator[bytes]:
    """The records of a TFRecord file, each checksum verified (ConfigError naming the file on a mismatch)."""
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ConfigError(f"truncated record header at byte {pos}", file=str(path))
        head = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", head)
        (head_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        body = data[pos + 12:pos + 12 + length]
        if head_crc != masked_crc(head) or len(body) != length or pos + 16 + length > len(data):
            raise ConfigError(f"bad record length or checksum at byte {pos}", file=str(path))
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if body_crc != masked_crc(body):
            raise ConfigError(f"bad record data checksum at byte {pos}", file=str(path))
        yield body
        pos += 16 + length


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of a message: varints as ints, the rest as their bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
            continue
        size = {1: 8, 5: 4}.get(wire)
        if size is None:  # wire type 2: length-delimited
            size, pos = _read_varint(buf, pos)
        yield number, wire, buf[pos:pos + size]
        pos += size


def decode_event(data: bytes) -> Event:
    """The fields of an Event this module writes (others are skipped)."""
    wall_time, step, version, scalars = 0.0, 0, None, {}
    for number, _, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            (wall_time,) = struct.unpack("<d", value)
        elif number == 2 and isinstance(value, int):
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3 and isinstance(value, bytes):
            version = value.decode()
        elif number == 5 and isinstance(value, bytes):
            for _, _, entry in _fields(value):
                parts = {n: v for n, _, v in _fields(entry)} if isinstance(entry, bytes) else {}
                tag, simple = parts.get(1), parts.get(2)
                if isinstance(tag, bytes) and isinstance(simple, bytes):
                    scalars[tag.decode()] = struct.unpack("<f", simple)[0]
    return Event(wall_time, step, version, scalars)


def read_events(path: str | Path) -> list[Event]:
    """Every event of an event file, its checksums verified."""
    return [decode_event(record) for record in read_records(path)]
