"""Streaming copy and gzip with fixed-size buffers: memory stays flat whatever the file size.

gzip_file reads in a thread while the calling thread compresses (zlib releases the GIL while it
deflates), so reading the next megabyte overlaps compressing this one; the queue between them is
bounded, so at most a few buffers are alive at any time.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import zlib
from typing import Callable

CHUNK_SIZE = 1 << 20  # 1 MiB reads and writes
GZIP_LEVEL = 6  # gzip's default, the level the benchmark compares against
_QUEUE_DEPTH = 4
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib writes the gzip header and trailer (CRC-32, size) itself


def write_all(descriptor: int, data: bytes | memoryview) -> None:
    """Write every byte of data to descriptor (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def fsync_directory(path: str) -> None:
    """Make a rename or unlink in directory `path` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def copy_range(source: int, target: int, start: int) -> int:
    """Given two descriptors, append source's bytes from offset `start` to its current end to target
    (at target's position). Return the number of bytes copied. Uses copy_file_range (no copy through
    user space) when the kernel and filesystem allow it, else 1 MiB reads and writes."""
    copied = 0
    position = start
    try:
        while True:
            count = os.copy_file_range(source, target, CHUNK_SIZE * 8, position)
            if count == 0:
                return copied
            copied += count
            position += count
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    while True:
        chunk = os.pread(source, CHUNK_SIZE, position)
        if not chunk:
            return copied
        write_all(target, chunk)
        copied += len(chunk)
        position += len(chunk)


def gzip_file(source_path: str, target_path: str, *, level: int = GZIP_LEVEL,
              after_chunk: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Given a file and a new path, write the gzip of the file there, fsynced. Return (bytes read,
    bytes written). Reads until end of file, so bytes appended while compressing are included.
    Raise FileExistsError if target_path exists; OSError (e.g. ENOSPC) leaves a partial target that
    the caller removes. after_chunk(bytes_read_so_far) runs after each chunk (cancellation, tests)."""
    source = os.open(source_path, os.O_RDONLY)
    try:
        target = os.open(target_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fadvise(source, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            bytes_read, bytes_written = _compress_descriptor(source, target, level, after_chunk)
            os.fsync(target)
            # the file was read once; keep the page cache for the service's working set
            os.posix_fadvise(source, 0, 0, os.POSIX_FADV_DONTNEED)
            return bytes_read, bytes_written
        finally:
            os.close(target)
    finally:
        os.close(source)


def _compress_descriptor(source: int, target: int, level: int,
                         after_chunk: Callable[[int], None] | None) -> tuple[int, int]:
    chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=_QUEUE_DEPTH)
    stop = threading.Event()

    def read_ahead() -> None:
        try:
            while not stop.is_set():
                chunk = os.read(source, CHUNK_SIZE)
                chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the compressing thread
            chunks.put(error)

    reader = threading.Thread(target=read_ahead, name="gzip-read-ahead", daemon=True)
    reader.start()
    compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    bytes_read = bytes_written = 0
    try:
        while True:
            chunk = chunks.get()
            if isinstance(chunk, BaseException):
                raise chunk
            if not chunk:
                break
            bytes_read += len(chunk)
            output = compressor.compress(chunk)
            del chunk
            if output:
                write_all(target, output)
                bytes_written += len(output)
            if after_chunk is not None:
                after_chunk(bytes_read)
        output = compressor.flush()
        write_all(target, output)
        bytes_written += len(output)
        return bytes_read, bytes_written
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                chunks.get_nowait()
            except queue.Empty:
                reader.join(0.01)
