"""Entry names inside zip archives, read within fixed bounds.

Only nested archives are decompressed; every other entry contributes its name
from the central directory and, to spot a zip renamed to something else, its
first four bytes. Bounds apply to one top-level archive and everything nested
in it:

- nesting depth (the top-level archive is depth 1);
- number of entries, counted from the raw central directory signatures before
  `zipfile` builds one object per entry;
- uncompressed size, both as the headers declare it and as counted while
  decompressing nested archives;
- compression ratio of any entry larger than `_RATIO_FLOOR`.

Going over a bound raises `ArchiveTooComplex`. An encrypted entry is not read,
but its name still is. A zip whose central directory is missing or corrupt
falls back to the names in its local file headers (PKWARE APPNOTE 4.3.7).
"""

from __future__ import annotations

import io
import logging
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
_CENTRAL_MAGIC = b"PK\x01\x02"
_LOCAL_HEADER = struct.Struct("<4s2H3H3I2H")
_READ_CHUNK = 64 * 1024
# Small entries compress extremely well when they are padding or blank lines;
# the ratio bound applies only above this size.
_RATIO_FLOOR = 1024 * 1024
_ENCRYPTED = 0x1  # general purpose bit 0, APPNOTE 4.4.4
_UTF8_NAME = 0x800  # general purpose bit 11, APPNOTE 4.4.4
# What zipfile raises on damaged or hostile input: truncation, bad offsets,
# unsupported methods, undeclared encryption, undecodable names.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    OSError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


class ArchiveTooComplex(Exception):
    """An archive goes over a bound; the message cannot be judged safely."""


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_depth: int = 3
    max_entries: int = 1_000
    max_bytes: int = 100 * 1024 * 1024
    max_ratio: int = 100


@dataclass(frozen=True, slots=True)
class Entry:
    """One name inside an archive; `archive` is the path of archives
    holding it, outermost first, joined by `/`."""

    archive: str
    name: str


@dataclass(slots=True)
class _Budget:
    limits: ArchiveLimits
    entries: int = 0
    declared: int = 0
    read: int = 0

    def add_entries(self, count: int) -> None:
        self.entries += count
        if self.entries > self.limits.max_entries:
            raise ArchiveTooComplex(f"more than {self.limits.max_entries} entries")

    def declare(self, size: int) -> None:
        self.declared += size
        if self.declared > self.limits.max_bytes:
            raise ArchiveTooComplex("declared size over the limit")

    def consume(self, size: int) -> None:
        self.read += size
        if self.read > self.limits.max_bytes:
            raise ArchiveTooComplex("uncompressed size over the limit")


def looks_like_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def zip_entries(
    data: bytes, name: str, limits: ArchiveLimits = ArchiveLimits()
) -> Iterator[Entry]:
    """Every entry name in the zip `data` (called `name`) and in the zips
    nested in it, within `limits`."""
    yield from _walk(data, name, 1, _Budget(limits))


def _walk(data: bytes, path: str, depth: int, budget: _Budget) -> Iterator[Entry]:
    if depth > budget.limits.max_depth:
        raise ArchiveTooComplex(f"zips nested deeper than {budget.limits.max_depth}")
    budget.add_entries(data.count(_CENTRAL_MAGIC))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        log.debug("zip %s has no readable central directory: %s", path, exc)
        yield from _local_names(data, path, budget)
        return
    with archive:
        for info in archive.infolist():
            yield from _visit(archive, info, path, depth, budget)


def _visit(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    path: str,
    depth: int,
    budget: _Budget,
) -> Iterator[Entry]:
    _check_declared(info, budget)
    yield Entry(path, info.filename)
    if info.is_dir() or info.flag_bits & _ENCRYPTED:
        return
    if not _is_nested_zip(archive, info):
        return
    inner = _read_bounded(archive, info, budget)
    yield from _walk(inner, f"{path}/{info.filename}", depth + 1, budget)


def _check_declared(info: zipfile.ZipInfo, budget: _Budget) -> None:
    budget.declare(info.file_size)
    if info.file_size <= _RATIO_FLOOR:
        return
    if info.file_size > budget.limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveTooComplex(f"compression ratio of {info.filename!r}")


def _is_nested_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    if info.filename.casefold().rstrip(". ").endswith(".zip"):
        return True
    try:
        with archive.open(info) as entry:
            return looks_like_zip(entry.read(len(ZIP_MAGIC)))
    except _ZIP_ERRORS:
        # The name has been given already; the bytes cannot be read.
        return False


def _read_bounded(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget
) -> bytes:
    """The entry's bytes, counted against the budget as they come."""
    chunks: list[bytes] = []
    total = 0
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(_READ_CHUNK):
                total += len(chunk)
                budget.consume(len(chunk))
                _check_ratio(info, total, budget.limits)
                chunks.append(chunk)
    except _ZIP_ERRORS as exc:
        # What was read still goes to the walk, which falls back to the
        # local headers of a truncated zip.
        log.debug("nested zip %s is unreadable: %s", info.filename, exc)
    return b"".join(chunks)


def _check_ratio(info: zipfile.ZipInfo, total: int, limits: ArchiveLimits) -> None:
    if total > _RATIO_FLOOR and total > limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveTooComplex(f"compression ratio of {info.filename!r}")


def _local_names(data: bytes, path: str, budget: _Budget) -> Iterator[Entry]:
    """Names from the local file headers, for a zip without a usable central
    directory (truncated, or damaged on purpose)."""
    budget.add_entries(data.count(ZIP_MAGIC))
    offset = data.find(ZIP_MAGIC)
    while offset != -1 and offset + _LOCAL_HEADER.size <= len(data):
        fields = _LOCAL_HEADER.unpack_from(data, offset)
        flags, name_length = fields[2], fields[9]
        start = offset + _LOCAL_HEADER.size
        raw = data[start : start + name_length]
        encoding = "utf-8" if flags & _UTF8_NAME else "cp437"
        yield Entry(path, raw.decode(encoding, errors="replace"))
        offset = data.find(ZIP_MAGIC, start + name_length)
