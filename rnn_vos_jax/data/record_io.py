"""The TFRecord file format, read and written through runtime.storage (local paths and gs://).

The one owner of the framing. A file is a sequence of records, each

    uint64 LE length | uint32 LE masked crc32c(length bytes) | data | uint32 LE masked crc32c(data)

with mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2**32; `RecordWriter` gives bytes
identical to tf.io.TFRecordWriter's (tests/test_records.py). We read the framing ourselves rather
than through tf.data.TFRecordDataset for two reasons: TensorFlow's GCS client cannot be pointed at
an emulator (storage.py), and a damaged file there dies with "corrupted record at 3984111" naming
no file. Here damage raises `CorruptRecordError`, one line naming the file, the record index, its
byte offset and the cause.

What a reader does with damage is a `Policy` (config.data.on_corrupt / max_corrupt_fraction):
'stop' raises at the first damaged record; 'skip' logs a warning and goes on with the next
record (or, when the length itself cannot be trusted or the file is cut short, the next file),
until the skipped fraction of the records the policy has seen passes max_corrupt_fraction.
`skipped_records()` counts the records skipped in this process (for the training metrics).

No TensorFlow here: the tf.data side is in record_files.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import struct
import threading
from collections.abc import Iterable, Iterator

import google_crc32c

from rnn_vos_jax.runtime import storage

ON_CORRUPT = ("stop", "skip")
# The skipped fraction is judged only once a policy has seen this many records: one damaged
# record among the first few would otherwise always be "above the limit".
MIN_RECORDS_FOR_FRACTION = 10
_HEADER = 12  # uint64 length + uint32 masked crc of it
_FOOTER = 4  # uint32 masked crc of the data
_MASK_DELTA = 0xA282EAD8
_READ_BLOCK = 1 << 20

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_skipped = 0


class CorruptRecordError(ValueError):
    """A damaged record, or too many of them; str() is one line naming the file and record.

    Attributes:
        path, index, offset, cause: where and what (index/offset of the damaged record; for
            "too many damaged records" those of the last one, or "" / -1 at a good record).
        rest_of_file: True when nothing after it in the file can be read (length unusable).
        data: the record's bytes when its length was readable (to name what it held), else None.
    """

    def __init__(self, path, index, offset, cause, *, rest_of_file=False, data=None, note=""):
        self.path, self.index, self.offset, self.cause = str(path), index, offset, cause
        self.rest_of_file, self.data, self.note = rest_of_file, data, note
        where = f"corrupt record in {path}: record {index} at byte {offset}{note}: " if path else ""
        super().__init__(where + cause)

    def with_note(self, note: str) -> CorruptRecordError:
        """The same error with `note` (e.g. " (video X)") after the byte offset."""
        return CorruptRecordError(
            self.path,
            self.index,
            self.offset,
            self.cause,
            rest_of_file=self.rest_of_file,
            data=self.data,
            note=note,
        )


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record's bytes as they appear in the file."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        [
            length,
            struct.pack("<I", masked_crc(length)),
            data,
            struct.pack("<I", masked_crc(data)),
        ]
    )


class RecordWriter:
    """Writes records to an open binary file object; counts them, their bytes and their sha256."""

    def __init__(self, f):
        self._f = f
        self.records = 0
        self.bytes = 0
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        framed = frame(bytes(data))
        self._f.write(framed)
        self._digest.update(framed)
        self.records += 1
        self.bytes += len(framed)

    def summary(self) -> dict:
        """{"records", "bytes", "sha256"} of what was written (dataset_info.json's shard fields)."""
        return {"records": self.records, "bytes": self.bytes, "sha256": self._digest.hexdigest()}


def write_records(path, records: Iterable[bytes]) -> dict:
    """Writes a whole record file at `path` atomically; returns RecordWriter.summary().

    Through storage.staged_output: locally a temporary sibling renamed into place, remotely a
    temporary local file uploaded as one object once complete (an object upload appears only
    when whole, while a streamed remote file object would publish a partial shard if the writer
    died). Either way a reader, or a resumed conversion, never sees part of a file.
    """
    with storage.staged_output(path) as local, storage.open(local, "wb") as f:
        writer = RecordWriter(f)
        for data in records:
            writer.write(data)
    return writer.summary()


def _read_exact(f, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def scan(f, path) -> Iterator[bytes | CorruptRecordError]:
    """The records of an open file in order: their data, or a CorruptRecordError (yielded, not
    raised) for a damaged one; after one with rest_of_file set nothing more is yielded."""
    index = offset = 0
    while True:
        header = _read_exact(f, _HEADER)
        if not header:
            return
        if len(header) < _HEADER:
            yield CorruptRecordError(
                path, index, offset, f"cut short ({len(header)} of 12 header bytes)",
                rest_of_file=True,
            )  # fmt: skip
            return
        length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
        if masked_crc(length_bytes) != length_crc:
            yield CorruptRecordError(
                path, index, offset, "length checksum mismatch (the rest of the file is unreadable)",
                rest_of_file=True,
            )  # fmt: skip
            return
        (length,) = struct.unpack("<Q", length_bytes)
        body = _read_exact(f, length + _FOOTER)
        if len(body) < length + _FOOTER:
            yield CorruptRecordError(
                path, index, offset,
                f"cut short ({len(body)} of {length + _FOOTER} bytes after the header)",
                rest_of_file=True, data=body[:length],
            )  # fmt: skip
            return
        data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
        if masked_crc(data) != data_crc:
            yield CorruptRecordError(path, index, offset, "data checksum mismatch", data=data)
        else:
            yield data
        index += 1
        offset += _HEADER + length + _FOOTER


@dataclasses.dataclass
class Policy:
    """What readers do with damaged records (module docstring); one per pipeline, thread-safe.

    `key` is the config section named in errors (e.g. "config.data"). `error` keeps the error a
    reader raised, so the caller can raise it again where tf.data would only report its text.
    """

    on_corrupt: str = "stop"
    max_corrupt_fraction: float = 0.01
    key: str = "config.data"
    seen: int = 0
    skipped: int = 0
    error: CorruptRecordError | None = None
    last_damage: CorruptRecordError | None = None

    def __post_init__(self):
        self._lock = threading.Lock()
        self._native: list[tuple[tuple[str, ...], object]] = []
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(
                f"{self.key}.on_corrupt must be one of {'|'.join(ON_CORRUPT)}: {self.on_corrupt!r}"
            )
        if not 0 <= float(self.max_corrupt_fraction) <= 1:
            raise ValueError(
                f"{self.key}.max_corrupt_fraction must be in [0, 1]: {self.max_corrupt_fraction}"
            )

    @classmethod
    def of(cls, data, key: str = "config.data") -> Policy:
        """The policy of a config section holding on_corrupt and max_corrupt_fraction."""
        return cls(str(data.on_corrupt), float(data.max_corrupt_fraction), key)

    def fail(self, error: CorruptRecordError):
        """Keeps `error` for the caller (see the class docstring) and raises it."""
        with self._lock:
            self.error = self.error or error
        raise error

    def _count(self, damaged: CorruptRecordError | None) -> None:
        global _skipped
        with self._lock:
            self.seen += 1
            if damaged is not None:
                self.skipped += 1
                self.last_damage = damaged
            seen, skipped, last = self.seen, self.skipped, self.last_damage
        if damaged is not None:
            with _lock:
                _skipped += 1
            _log.warning("skipping damaged record (%s.on_corrupt=skip): %s", self.key, damaged)
        limit = float(self.max_corrupt_fraction)
        if skipped and seen >= MIN_RECORDS_FOR_FRACTION and skipped / seen > limit:
            error = CorruptRecordError(
                "",
                last.index,
                last.offset,
                f"skipped {skipped} of {seen} records read ({skipped / seen:.1%}) as damaged, "
                f"above {self.key}.max_corrupt_fraction={limit:g} (last: {last})",
            )
            error.path = last.path  # the message names it in "last: ..."
            self.fail(error)

    def native(self, files, annotate=None) -> bool:
        """Whether TensorFlow's own reader may read `files`: local files while damage stops the
        run. It costs a third less CPU per training clip than reading here and handing records
        to tf.data one by one (benchmarks/RESULTS.md), but its DataLossError names no file, so
        the files are kept for `locate`. URLs, and skipping, go through `records`."""
        files = tuple(str(f) for f in files)
        if self.on_corrupt != "stop" or not files or any(storage.is_remote(f) for f in files):
            return False
        with self._lock:
            if (files, annotate) not in self._native:
                self._native.append((files, annotate))
        return True

    def locate(self) -> CorruptRecordError | None:
        """The first damaged record of the files TensorFlow read (`native`), found by reading
        them here; None when they are whole."""
        for files, annotate in list(self._native):
            for path in files:
                try:
                    for _ in Policy(key=self.key).records(path, annotate):
                        pass
                except CorruptRecordError as error:
                    return error
        return None

    def records(self, path, annotate=None) -> Iterator[bytes]:
        """The good records of one file, in order, applying the policy to damaged ones.

        Args:
            path: a record file (local or remote).
            annotate: optional fn(error) -> error adding what the damaged record held.
        """
        path = str(path)
        with storage.open(path, "rb") as f:
            for item in scan(f, path):
                if isinstance(item, CorruptRecordError):
                    if annotate is not None:
                        item = annotate(item)
                    if self.on_corrupt == "stop":
                        self.fail(item)
                    self._count(item)
                    continue
                self._count(None)
                yield item


def read_records(path, policy: Policy | None = None) -> Iterator[bytes]:
    """The records of one file in order; damage raises CorruptRecordError unless `policy` skips."""
    return (policy or Policy()).records(path)


def skipped_records() -> int:
    """Damaged records skipped (on_corrupt='skip') in this process so far."""
    with _lock:
        return _skipped


class _HashingReader:
    """A file object's read() that also hashes and counts what passes through."""

    def __init__(self, f):
        self._f, self.digest, self.bytes = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        self.digest.update(chunk)
        self.bytes += len(chunk)
        return chunk


def check_file(path) -> dict:
    """Reads a whole record file once: {"records": good records, "bytes", "sha256", "damage":
    [CorruptRecordError, ...]} (damage after which the file is unreadable ends the list)."""
    path = str(path)
    with storage.open(path, "rb") as f:
        reader = _HashingReader(f)
        records, damage = 0, []
        for item in scan(reader, path):
            if isinstance(item, CorruptRecordError):
                damage.append(item)
            else:
                records += 1
        while reader.read(_READ_BLOCK):  # the hash covers the whole file
            pass
    return {
        "records": records,
        "bytes": reader.bytes,
        "sha256": reader.digest.hexdigest(),
        "damage": damage,
    }


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with storage.open(path, "rb") as f:
        for block in iter(lambda: f.read(_READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
