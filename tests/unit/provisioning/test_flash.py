"""esptool through its own API: image checks and merge-bin need no chip; detection and flashing
run against tests/unit/provisioning/rom_peer.py, a simulated ROM bootloader on a TCP socket."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
from collections.abc import Iterator
from pathlib import Path

import pytest
from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage

from provisioning.errors import (
    BoardBusyError,
    ChecksumMismatchError,
    FlashError,
    ImageError,
    NoBoardError,
    WrongChipError,
)
from provisioning.flash import check_image, detect, flash, flash_offset, merge_image
from tests.unit.provisioning.rom_peer import RomPeer


def make_image(path: Path, *, chip: str = "esp32", payload: bytes = b"") -> Path:
    """A small, valid ESP firmware image built with esptool's own image classes."""
    image = ESP32S3FirmwareImage() if chip == "esp32s3" else ESP32FirmwareImage()
    image.entrypoint = 0x40080000
    data = payload or hashlib.sha256(path.name.encode()).digest() * 64
    image.segments.append(ELFSection(b".dram0.data", 0x3FFB0000, data, 0))
    path.write_bytes(image.save(None))
    return path


def test_offsets_follow_the_chip_family() -> None:
    assert flash_offset("ESP32") == 0x1000
    assert flash_offset("esp32") == 0x1000
    assert flash_offset("ESP32-S3") == 0x0
    assert flash_offset("ESP32-C3") == 0x0
    with pytest.raises(ImageError, match="unknown chip"):
        flash_offset("ESP99")


def test_check_image_reads_chip_and_digest(tmp_path: Path) -> None:
    path = make_image(tmp_path / "mp.bin")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = check_image(path, sha256=digest.upper())
    assert (info.chip, info.chip_name, info.offset, info.sha256) == (
        "esp32",
        "ESP32",
        0x1000,
        digest,
    )
    s3 = check_image(make_image(tmp_path / "s3.bin", chip="esp32s3"), sha256=None)
    assert (s3.chip, s3.offset) == ("esp32s3", 0x0)


def test_checksum_mismatch_names_both_digests(tmp_path: Path) -> None:
    path = make_image(tmp_path / "mp.bin")
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError, match="download it again") as caught:
        check_image(path, sha256=wrong)
    assert caught.value.expected == wrong
    assert caught.value.actual == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ImageError, match="64 hex digits"):
        check_image(path, sha256="abc")


def test_damaged_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path = make_image(tmp_path / "mp.bin")
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0x40
    (tmp_path / "damaged.bin").write_bytes(damaged)
    with pytest.raises(ImageError, match="damaged"):
        check_image(tmp_path / "damaged.bin", sha256=None)
    (tmp_path / "notes.txt").write_text("not firmware at all, just some text " * 4)
    with pytest.raises(ImageError, match="not an ESP32 firmware image"):
        check_image(tmp_path / "notes.txt", sha256=None)
    with pytest.raises(ImageError, match="cannot read"):
        check_image(tmp_path / "missing.bin", sha256=None)


def test_merge_bin_places_parts_relative_to_the_bootloader_offset(tmp_path: Path) -> None:
    boot = make_image(tmp_path / "bootloader.bin")
    app = make_image(tmp_path / "app.bin", payload=b"APP!" * 300)
    table = tmp_path / "partitions.bin"
    table.write_bytes(b"\xaa\x50" + b"partition-table" + b"\xff" * 15)
    merged = merge_image(
        [(0x1000, boot), (0x8000, table), (0x10000, app)], chip="esp32", out=tmp_path / "m.bin"
    )
    data = merged.data
    assert merged.chip == "esp32" and merged.offset == 0x1000
    assert data[: boot.stat().st_size] == boot.read_bytes()
    assert data[0x8000 - 0x1000 :][: table.stat().st_size] == table.read_bytes()
    assert data[0x10000 - 0x1000 :] == app.read_bytes()
    assert set(data[boot.stat().st_size : 0x7000]) == {0xFF}  # padding is erased flash
    with pytest.raises(ImageError, match="cannot merge"):
        merge_image([(0x1000, tmp_path / "nope.bin")], chip="esp32", out=tmp_path / "x.bin")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "micropython.bin")


def test_flash_erases_writes_at_the_offset_and_verifies(image: Path) -> None:
    info = check_image(image, sha256=None)
    chunks: list[int] = []
    with RomPeer(chip="esp32") as peer:
        assert flash(peer.url, info, erase=True, progress=chunks.append, connect_attempts=1) == (
            "ESP32"
        )
        assert peer.erased
        assert bytes(peer.flash[0x1000 : 0x1000 + info.size]) == info.data
        assert set(peer.flash[:0x1000]) == {0xFF}
        assert 0x13 in peer.ops  # esptool asked for the MD5 of what it wrote
    assert sum(chunks) == info.size


def test_s3_image_goes_to_offset_zero(tmp_path: Path) -> None:
    info = check_image(make_image(tmp_path / "s3.bin", chip="esp32s3"), sha256=None)
    with RomPeer(chip="esp32s3") as peer:
        assert flash(peer.url, info, connect_attempts=1) == "ESP32-S3"
        assert bytes(peer.flash[: info.size]) == info.data


def test_wrong_chip_is_refused_before_anything_is_written(image: Path) -> None:
    info = check_image(image, sha256=None)
    with RomPeer(chip="esp32s3") as peer:
        with pytest.raises(WrongChipError, match="board is an ESP32-S3") as caught:
            flash(peer.url, info, erase=True, connect_attempts=1)
        assert (caught.value.found, caught.value.expected) == ("ESP32-S3", "ESP32")
        assert not peer.erased
        assert not {0x02, 0x10, 0xD0} & set(peer.ops)


def test_silent_board_is_no_board(image: Path) -> None:
    with RomPeer(silent=True) as peer, pytest.raises(NoBoardError, match="hold the BOOT"):
        flash(peer.url, check_image(image, sha256=None), connect_attempts=1)


def test_corrupted_write_fails_the_md5_check(image: Path) -> None:
    with RomPeer(corrupt=True) as peer, pytest.raises(FlashError, match="writing the flash"):
        flash(peer.url, check_image(image, sha256=None), connect_attempts=1)


@pytest.fixture
def locked_pty() -> Iterator[str]:
    """A pseudo-terminal another program holds with an exclusive lock (as pyserial does)."""
    controller, terminal = pty.openpty()
    name = os.ttyname(terminal)
    holder = os.open(name, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield name
    finally:
        for fd in (holder, terminal, controller):
            os.close(fd)


def test_busy_and_missing_ports(locked_pty: str, tmp_path: Path) -> None:
    with pytest.raises(BoardBusyError, match="in use by another program"):
        detect(locked_pty, connect_attempts=1)
    with pytest.raises(NoBoardError, match="no such serial port"):
        detect(str(tmp_path / "ttyUSB9"), connect_attempts=1)
