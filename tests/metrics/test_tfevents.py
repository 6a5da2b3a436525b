"""TensorBoard event files written by hand: the TFRecord checksums, the Event encoding, and TensorBoard's reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from peernet.errors import ConfigError
from peernet.metrics.tfevents import FILE_VERSION, EventWriter, crc32c, read_events


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(b"") == 0


def test_events_read_back_with_their_checksums_verified(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as writer:
        writer.scalars(1, {"loss": 2.5, "test_accuracy": 0.75}, wall_time=1000.5)
        writer.scalars(300, {"loss": 0.125})
    assert writer.path.name.startswith("events.out.tfevents.")
    first, second, third = read_events(writer.path)
    assert first.file_version == FILE_VERSION and not first.scalars
    assert (second.step, second.wall_time, second.scalars) == (1, 1000.5, {"loss": 2.5, "test_accuracy": 0.75})
    assert third.step == 300 and third.scalars == {"loss": 0.125}
    data = bytearray(writer.path.read_bytes())
    data[-5] ^= 1  # one bit of the last record's data
    bad = tmp_path / "bad" / writer.path.name
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        read_events(bad)
    bad.write_bytes(bytes(data[:-3]))
    with pytest.raises(ConfigError):
        read_events(bad)


def test_tensorboard_reads_them_when_installed(tmp_path: Path) -> None:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with EventWriter(tmp_path) as writer:
        for step in range(1, 4):
            writer.scalars(step, {"loss": 1.0 / step})
    acc = accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
