"""The spool: a local append-only log of accepted OTLP export requests, the collector's write-ahead log.

Every accepted request is appended here and fsync'd before it is acknowledged; the loader
(`loader.Loader`) reads it in order and writes it to the store in batches. Positions are global byte
offsets; a segment file is named after the offset of its first byte, so reading offset `p` opens the segment
with the largest name <= p.

    record = length (u32 LE) | crc32 (u32 LE) | payload (a serialized ExportTraceServiceRequest)

`checkpoint.json` holds the offset up to which everything is in the store (`committed`) and, while a
batch is being inserted, that batch's bounds and the calls left out of it as duplicates (`inflight`), so
that after a crash the same rows are re-sent with the same deduplication token. Segments wholly below `committed` are deleted.

Group commit: writers append under one lock, then whoever holds the sync lock fsyncs everything written so
far, so concurrent requests share one fsync.

A failed write (a disk full) leaves the spool as it was: an append is cut back and raises OSError (the receivers
push back), a checkpoint write can be repeated until it succeeds. The spool holds whole requests, prompts
included: its directory is 0700 and its files 0600, whatever the umask.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path
from typing import Iterator

logger = logging.getLogger("otel_llmcost.collector")

HEADER = struct.Struct("<II")
SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 1 << 31
# Test hook (collector/README.md): while this file exists, every spool write (appends and checkpoints) fails as
# on a full disk.
DISK_FULL_FILE = os.environ.get("OTEL_LLMCOST_FAULT_DISK_FULL_FILE") or None
DIR_MODE, FILE_MODE = 0o700, 0o600


def _check_disk() -> None:
    if DISK_FULL_FILE and os.path.exists(DISK_FULL_FILE):
        raise OSError(errno.ENOSPC, f"No space left on device (fault injection: {DISK_FULL_FILE} exists)")


def make_private_dir(directory: Path) -> None:
    """Creates `directory` (and its parents) if need be; it, and the files in it, owner-only."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)


class SpoolFull(Exception):
    """The spool holds as much not-yet-stored data as it may: push back."""


class Spool:
    def __init__(self, directory: Path | str, max_bytes: int = 1 << 30, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(directory)
        make_private_dir(self.dir)
        for path in self.dir.iterdir():  # (made by an older release, or with another umask)
            if path.is_file():
                os.chmod(path, FILE_MODE)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock_file = os.fdopen(os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise RuntimeError(f"spool {self.dir} is in use by another collector") from exc
        id_file = self.dir / "id"
        if not id_file.exists():
            _atomic_write(id_file, uuid.uuid4().hex)
        self.id = id_file.read_text().strip()
        self.checkpoint_file = self.dir / "checkpoint.json"
        state = json.loads(self.checkpoint_file.read_text()) if self.checkpoint_file.exists() else {}
        self.committed: int = state.get("committed", 0)
        # (start, end, [(trace_id, span_id) left out of the batch as already stored])
        self.inflight: tuple | None = tuple(state["inflight"]) if state.get("inflight") else None
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.synced_changed = threading.Condition()
        self._open_tail()
        self.synced = self.written
        self.pending_records = sum(1 for _ in self.read(self.committed, max_bytes=1 << 62, headers_only=True))

    # -- segments ---------------------------------------------------------------------------------

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg"))

    def _path(self, start: int) -> Path:
        return self.dir / f"{start:020d}.seg"

    def _open_tail(self) -> None:
        """Opens the last segment for appending, cutting off a torn record left by a crash."""
        starts = self.segments()
        if not starts:
            start = self.committed
            self.fd = os.open(self._path(start), os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            self.segment_start, self.written = start, start
            _fsync_dir(self.dir)
            return
        start = starts[-1]
        path = self._path(start)
        valid = 0
        with open(path, "rb") as f:
            data = f.read()
        while valid + HEADER.size <= len(data):
            length, crc = HEADER.unpack_from(data, valid)
            end = valid + HEADER.size + length
            if end > len(data) or zlib.crc32(data[valid + HEADER.size:end]) != crc:
                break
            valid = end
        if valid != len(data):
            logger.warning("spool: cut a torn record at the end of %s (%d bytes, never acknowledged)",
                           path.name, len(data) - valid)
            os.truncate(path, valid)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.segment_start, self.written = start, start + valid
        if self.committed > self.written:  # a checkpoint past the data (spool files removed by hand)
            self.committed = self.written

    def _roll(self) -> None:
        """Called with both locks held: the current segment is complete and durable; start the next. (If that
        fails, e.g. on a full disk, nothing changed: the next append tries again.)"""
        _check_disk()
        os.fsync(self.fd)
        fd = os.open(self._path(self.written), os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            _fsync_dir(self.dir)
        except OSError:
            os.close(fd)
            raise
        os.close(self.fd)
        self.fd, self.segment_start = fd, self.written

    # -- writing ----------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Bytes accepted but not yet in the store."""
        return self.written - self.committed

    def append(self, payload: bytes) -> int:
        """Appends one record and returns once it is on disk (fsync'd); its end offset. Raises SpoolFull."""
        if len(payload) >= MAX_RECORD_BYTES:
            raise ValueError("record too large for the spool")
        record = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if self.written - self.segment_start >= self.segment_bytes:
            with self._sync_lock, self._write_lock:
                if self.written - self.segment_start >= self.segment_bytes:
                    self._roll()
        with self._write_lock:
            if self.written + len(record) - self.committed > self.max_bytes:
                raise SpoolFull(f"spool holds {self.backlog} bytes not yet stored (limit {self.max_bytes})")
            view = memoryview(record)
            try:
                _check_disk()
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError:  # e.g. disk full: cut the partial record, so that the next one starts clean
                os.ftruncate(self.fd, self.written - self.segment_start)
                raise
            self.written += len(record)
            self.pending_records += 1
            end = self.written
        self._sync(end)
        return end

    def _sync(self, end: int) -> None:
        with self._sync_lock:
            if self.synced >= end:
                return  # someone else's fsync covered our record
            with self._write_lock:
                fd, target = self.fd, self.written
            os.fsync(fd)  # earlier segments were fsync'd when they were rolled
            with self.synced_changed:
                self.synced = target
                self.synced_changed.notify_all()

    # -- reading ----------------------------------------------------------------------------------

    def read(self, start: int, max_bytes: int = 8 << 20, until: int | None = None,
             headers_only: bool = False) -> Iterator[tuple[int, int, bytes]]:
        """(offset, end, payload) of the durable records from `start` on, about `max_bytes` of them."""
        limit = self.synced if until is None else min(until, self.synced)
        position, read = start, 0
        while position < limit and read < max_bytes:
            starts = [s for s in self.segments() if s <= position]
            if not starts:
                raise RuntimeError(f"spool: no segment holds offset {position}")
            segment = starts[-1]
            with open(self._path(segment), "rb") as f:
                f.seek(position - segment)
                while position < limit and read < max_bytes:
                    header = f.read(HEADER.size)
                    if len(header) < HEADER.size:
                        break  # end of this segment: the next one starts here
                    length, crc = HEADER.unpack(header)
                    if headers_only:
                        f.seek(length, os.SEEK_CUR)
                        payload = b""
                    else:
                        payload = f.read(length)
                    if not headers_only and (len(payload) != length or zlib.crc32(payload) != crc):
                        raise RuntimeError(f"spool: corrupt record at offset {position}")
                    end = position + HEADER.size + length
                    yield position, end, payload
                    read += HEADER.size + length
                    position = end

    def wait(self, position: int, timeout: float) -> bool:
        """Waits until there is durable data past `position`; whether there is."""
        with self.synced_changed:
            if self.synced > position:
                return True
            self.synced_changed.wait(timeout)
            return self.synced > position

    # -- checkpoint -------------------------------------------------------------------------------

    def begin(self, start: int, end: int, skipped: list | None = None) -> None:
        """Records that the batch [start, end) is being inserted (durably, before the insert), and which calls
        of it were left out as already stored, so that a replay rebuilds exactly the same rows."""
        self.inflight = (start, end, list(skipped or []))
        self._save()

    def commit(self, end: int, records: int = 0) -> None:
        """Everything before `end` is in the store: advance, and delete the segments no longer needed. OSError if
        the checkpoint cannot be written: call it again (with the same arguments) until it succeeds."""
        if end != self.committed or self.inflight is not None:
            self.committed = end
            with self._write_lock:
                self.pending_records -= records
            self.inflight = None
        self._save()
        starts = self.segments()
        for start, following in zip(starts, starts[1:]):
            if following <= end:
                try:
                    self._path(start).unlink()
                except FileNotFoundError:
                    pass

    def token(self, start: int, end: int) -> str:
        """The deduplication token of the batch [start, end): the same after a restart."""
        return f"llmcost-spool:{self.id}:{start}:{end}"

    def _save(self) -> None:
        state = {"committed": self.committed, "inflight": list(self.inflight) if self.inflight else None}
        _atomic_write(self.checkpoint_file, json.dumps(state))

    def close(self) -> None:
        with self._sync_lock, self._write_lock:
            try:
                os.fsync(self.fd)
                os.close(self.fd)
            except OSError:
                pass
        self._lock_file.close()


def _atomic_write(path: Path, text: str) -> None:
    _check_disk()
    tmp = path.with_suffix(path.suffix + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
