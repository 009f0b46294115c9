"""The saved position of a file source (like a Kafka Connect source offset), ingest-private.

One JSON file per source path: `<state_dir>/ingest/positions/<name>-<16 hex>.json`, the hex
being blake2b of the resolved path. It names the file it belongs to (resolved path, size,
mtime_ns, blake2b of its first 64 KiB): a different file at the same path (rewritten, replaced,
appended to) does not match and is read from line 1, with a log line. Writes are atomic (a
temporary file in the same folder, fsync, rename): a crash leaves the old or the new position,
never a torn one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from stages.common.contract import Contract
from stages.common.errors import ContractError, IngestError
from stages.ingest.core.position import AckedPosition, SeekPoint
from stages.ingest.sources import file_tag

log = logging.getLogger(__name__)
_HEAD_BYTES = 64 << 10


class IngestPosition(Contract):
    """How far a file was ingested: lines 1..`lines` are acknowledged by the broker (as events
    or, for bad lines, as dead letters). `seek_line`/`seek_byte`: a line boundary at or before
    `lines` whose byte offset is known (a gzip file keeps 0 and 0: it is read from its start
    and the lines skipped). complete: the whole file was read and acknowledged."""

    RECORD: ClassVar[str] = "ingest position"

    schema_version: Literal[1] = 1
    path: str = Field(description="The file's resolved path.")
    size: int = Field(ge=0, description="Its size in bytes when the position was taken.")
    mtime_ns: int = Field(description="Its modification time (ns) then.")
    head_blake2b: str = Field(description="blake2b (16 bytes, hex) of its first 64 KiB.")
    source_tag: str = Field(description="The <source> part of its event ids.")
    lines: int = Field(ge=0, description="Lines 1..lines are acknowledged.")
    seek_line: int = Field(ge=0, description="A line boundary at or before `lines`...")
    seek_byte: int = Field(ge=0, description="...and its byte offset in the file.")
    complete: bool = Field(description="The whole file is acknowledged.")
    saved_at_ms: int = Field(ge=0, description="When this was written (Unix ms).")


@dataclass(frozen=True)
class FileIdentity:
    """What a position must match to apply to a file."""

    path: str
    size: int
    mtime_ns: int
    head_blake2b: str
    source_tag: str

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        """The identity of `path` now (IngestError when it cannot be read)."""
        resolved = path.resolve()
        try:
            stat = resolved.stat()
            with resolved.open("rb") as stream:
                head = stream.read(_HEAD_BYTES)
        except OSError as exc:
            detail = f"{exc.strerror}; check the --source path"
            raise IngestError(f"cannot read {path}: {detail}") from None
        digest = hashlib.blake2b(head, digest_size=16).hexdigest()
        return cls(str(resolved), stat.st_size, stat.st_mtime_ns, digest, file_tag(resolved))

    def matches(self, saved: IngestPosition) -> bool:
        """True when `saved` was taken of this very file."""
        return (saved.path, saved.size, saved.mtime_ns, saved.head_blake2b, saved.source_tag) == (
            self.path, self.size, self.mtime_ns, self.head_blake2b, self.source_tag
        )  # fmt: skip


def position_file(state_dir: Path, identity: FileIdentity) -> Path:
    """Where the position of the file at `identity.path` is kept."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(identity.path).name)[:64] or "file"
    digest = hashlib.blake2b(identity.path.encode(), digest_size=8).hexdigest()
    return state_dir / "ingest" / "positions" / f"{stem}-{digest}.json"


def load_position(where: Path, identity: FileIdentity) -> IngestPosition | None:
    """The saved position of this file, or None (no position, or one of another file).

    Raises IngestError when the position file exists but is unreadable or breaks its contract.
    """
    try:
        text = where.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IngestError(f"cannot read the ingest position {where}: {exc.strerror}") from None
    try:
        saved = IngestPosition.parse(text)
    except ContractError as exc:
        raise IngestError(
            f"the ingest position {where} is unreadable ({exc}); delete it, or pass "
            "--from-start to send the file from line 1"
        ) from None
    if not identity.matches(saved):
        log.warning(
            "%s changed since its saved position (%d lines of another version): reading it "
            "from line 1", identity.path, saved.lines,
        )  # fmt: skip
        return None
    return saved


def save_position(
    where: Path, identity: FileIdentity, acked: AckedPosition, complete: bool
) -> IngestPosition:
    """Write the position atomically (tmp file, fsync, rename) and return it."""
    record = IngestPosition(
        path=identity.path,
        size=identity.size,
        mtime_ns=identity.mtime_ns,
        head_blake2b=identity.head_blake2b,
        source_tag=identity.source_tag,
        lines=acked.lines,
        seek_line=acked.seek.line,
        seek_byte=acked.seek.byte or 0,
        complete=complete,
        saved_at_ms=time.time_ns() // 1_000_000,
    )
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as stream:
            stream.write(record.to_json())
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, where)
    except OSError as exc:
        raise IngestError(
            f"cannot save the ingest position {where}: {exc.strerror}; check FRESHREC_STATE_DIR"
        ) from None
    return record


def acked_of(saved: IngestPosition) -> AckedPosition:
    """The acknowledged position a saved record stands for."""
    return AckedPosition(saved.lines, SeekPoint(saved.seek_line, saved.seek_byte))
