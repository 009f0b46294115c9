"""Ingest sources: a file of rows in the schema's format (plain or gzip), a binary stream
(stdin), the synthetic generator of the schema (`SYNTHETIC`, by schema name).

Each source yields `SourceBatch`es: a `LineBatch`, where it is in the source, and event times.
A header format's header line is an ordinary line 1 here (`pipeline` takes it out); a file
read from a resumed position carries its first line as `file_head` instead.
Source tags (the `<source>` of event ids, 1-32 chars of [A-Za-z0-9_.-]):

- a file: "f" + 12 hex digits of blake2b(resolved path, size, mtime_ns): the same unchanged file
  gives the same ids on every run (a consumer can spot a re-ingested row), a changed one new ids;
- a stream (stdin): "s" + 16 random hex digits, new for every run (a stream cannot be identified);
- a file read with `--loop`: "l" + 16 random hex digits, new for every run (`loop_tag`), seqs
  going on across passes: each pass, and each run, sends new events (a run restarted from line
  1 under the file's tag would look like re-sent events to the features stage's event-id check);
- the generator: "syn<seed>-" + 12 random hex digits + the config fingerprint (cut to 32
  chars), new for every run (`synthetic_run_tag`): two runs with one seed make the same rows,
  but they are new events, which the features stage must not drop as re-sent (seq = position
  in the generator's stream).

Gzip is detected by its magic bytes (1f 8b), not by the file name.

A file read once can start mid-file (`FileStart`, a resumed position): a plain file seeks to
the byte offset of a known line boundary, a gzip file is read from its start; either way the
lines up to the acknowledged one are skipped, and line numbers (so seqs and event ids) are the
same as in a run from line 1.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from stages.common.errors import ConfigError, IngestError
from stages.common.schema import FeatureSchema, load_schema
from stages.ingest.core.ecommerce import EcommerceConfig, EcommerceStream
from stages.ingest.core.lines import LineBatch, LineSplitter
from stages.ingest.core.pacing import tail
from stages.ingest.core.position import SeekPoint
from stages.ingest.core.prepare import SourcePosition
from stages.ingest.core.rowformat import N_CATS, N_DENSE
from stages.ingest.core.synthetic import SyntheticConfig, generate_rows
from stages.ingest.core.validate import rowcheck_layout
from stages.ingest.settings import IngestSettings

_GZIP_MAGIC = b"\x1f\x8b"
_SYNTHETIC_CHUNK = 16384


@dataclass(frozen=True)
class SourceBatch:
    """Lines read from a source, where they are in it, and their event times (ms).

    end_byte: the byte offset in the file where the batch's last line ends (plain files only).
    file_head: the file's line 1 (without its line end) when the read started after it.
    """

    lines: LineBatch
    position: SourcePosition
    event_time_ms: int | npt.NDArray[np.int64]
    end_byte: int | None = None
    file_head: bytes | None = None


@dataclass(frozen=True)
class FileStart:
    """Where a read of a file starts: at `seek` (a plain file's known line boundary, or line 0
    byte None for gzip), then skipping lines up to and including `skip_through`."""

    seek: SeekPoint
    skip_through: int


def now_ms() -> int:
    """Wall-clock time in ms since the Unix epoch (the event time of rows without one)."""
    return time.time_ns() // 1_000_000


def file_tag(path: Path) -> str:
    """The source tag of a file: stable while the file (path, size, mtime) does not change."""
    resolved = path.resolve()
    stat = resolved.stat()
    ident = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return "f" + hashlib.blake2b(ident, digest_size=6).hexdigest()


def stream_tag() -> str:
    """The source tag of a stream: unique per call."""
    return "s" + uuid.uuid4().hex[:16]


def loop_tag() -> str:
    """The source tag of a file read with --loop: unique per call (per run)."""
    return "l" + uuid.uuid4().hex[:16]


def synthetic_run_tag(config: SyntheticConfig) -> str:
    """The source tag of one run of the generator, unique per call: "syn<seed>-", then 12
    random hex digits and the config fingerprint, cut to 32 chars (at least 9 random digits
    remain with the largest seed)."""
    prefix = f"syn{config.seed}-"
    return prefix + (uuid.uuid4().hex[:12] + config.fingerprint())[: 32 - len(prefix)]


def _read_chunks(
    stream: BinaryIO, chunk_bytes: int, eager: bool
) -> Iterator[bytes | bytearray]:
    """Chunks of up to `chunk_bytes`; `eager`: return what a pipe has now, not wait to fill.

    A full chunk is one bytearray, read into again for the next chunk (megabytes of fresh memory
    for every chunk would cost a page fault per 4 KiB): use it before asking for the next.
    """
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    readinto = getattr(stream, "readinto1", None) if eager else getattr(stream, "readinto", None)
    if readinto is None:
        read = getattr(stream, "read1", stream.read) if eager else stream.read
        while chunk := read(chunk_bytes):
            yield chunk
        return
    while size := readinto(view):
        yield buffer if size == chunk_bytes else bytes(view[:size])


def _stream_batches(
    stream: BinaryIO,
    position: SourcePosition,
    chunk_bytes: int,
    max_line: int,
    eager: bool,
    seek: SeekPoint | None = None,
) -> Iterator[SourceBatch]:
    """seek: where `stream` starts (its first line's number - 1 and, for a plain file, the byte
    offset) so that batches carry line numbers and end bytes of the whole file."""
    splitter = LineSplitter(max_line, 1 if seek is None else seek.line + 1)
    fed = None if seek is None or seek.byte is None else seek.byte
    for chunk in _read_chunks(stream, chunk_bytes, eager):
        batch = splitter.feed(chunk)
        if fed is not None:
            fed += len(chunk)
        if len(batch):
            end = None if fed is None else fed - splitter.pending_bytes()
            yield SourceBatch(batch, position, now_ms(), end)
    last = splitter.finish()
    if len(last):
        yield SourceBatch(last, position, now_ms(), fed)


def _open_file(path: Path) -> BinaryIO:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}; check the --source path") from None
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def skip_lines(batches: Iterator[SourceBatch], through: int) -> Iterator[SourceBatch]:
    """`batches` without the lines numbered up to and including `through` (files: int times)."""
    for item in batches:
        last = item.lines.first_line + len(item.lines) - 1
        if last <= through:
            continue
        if item.lines.first_line <= through:
            cut = tail(item.lines, through - item.lines.first_line + 1)
            item = replace(item, lines=cut)
        yield item


def file_batches(
    path: Path,
    *,
    chunk_bytes: int,
    max_line: int,
    loop: bool = False,
    start: FileStart | None = None,
    tag: str | None = None,
) -> Iterator[SourceBatch]:
    """The lines of a file, read once or (`loop`) again and again with new sequence numbers.

    Pass k (0-based) uses seq_base = k * (lines in the file), so event ids never repeat; with
    `loop` the tag is `loop_tag()` (new per run, so a second run's ids do not repeat either).
    start: read once from there (not with `loop`). tag: the file's tag when the caller has it.
    Plain files read from line 1 or from a seek point give each batch its `end_byte`.
    Raises IngestError when the file cannot be read or is not valid gzip.
    """
    if not path.is_file():
        raise IngestError(f"{path} is not a file; check the --source path")
    if start is not None and loop:
        raise ConfigError("a start position applies to a file read once, not to --loop")
    tag = tag or (loop_tag() if loop else file_tag(path))
    name, seq_base = str(path.resolve()), 0
    while True:
        lines = 0
        position = SourcePosition(name, tag, seq_base)
        with _open_file(path) as stream:
            try:
                items = _file_items(stream, position, chunk_bytes, max_line, start)
                for item in items:
                    lines += len(item.lines)
                    yield item
            except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
                raise IngestError(f"cannot read {path}: {exc}") from None
        if not loop or lines == 0:
            return
        seq_base += lines


def _file_items(
    stream: BinaryIO,
    position: SourcePosition,
    chunk_bytes: int,
    max_line: int,
    start: FileStart | None,
) -> Iterator[SourceBatch]:
    gz = isinstance(stream, gzip.GzipFile)
    seek = start.seek if start is not None else SeekPoint(0, None if gz else 0)
    if gz and seek.byte is not None:
        seek = SeekPoint(0, None)  # a gzip file cannot seek: read it from its first line
    if start is None:
        return _stream_batches(stream, position, chunk_bytes, max_line, False, seek)
    head = stream.readline(max_line + 2).rstrip(b"\r\n")
    stream.seek(seek.byte or 0)
    items = _stream_batches(stream, position, chunk_bytes, max_line, False, seek)
    return (replace(item, file_head=head) for item in skip_lines(items, start.skip_through))


def stream_batches(
    stream: BinaryIO, *, chunk_bytes: int, max_line: int, name: str = "-"
) -> Iterator[SourceBatch]:
    """The lines of a binary stream (stdin, a pipe, a BytesIO), read once, with a fresh tag."""
    position = SourcePosition(name, stream_tag())
    yield from _stream_batches(stream, position, chunk_bytes, max_line, True)


def synthetic_batches(
    config: SyntheticConfig, start: int = 0, count: int | None = None
) -> Iterator[SourceBatch]:
    """`count` rows (None: endless) of the generator from position `start` on. seq = position,
    so an event id names its position in the generator's stream, under a tag new for every
    call (`synthetic_run_tag`); event times are simulated."""
    position = SourcePosition("synthetic", synthetic_run_tag(config), 0)
    end = None if count is None else start + count
    while end is None or start < end:
        size = _SYNTHETIC_CHUNK if end is None else min(_SYNTHETIC_CHUNK, end - start)
        chunk = generate_rows(config, start, size)
        yield SourceBatch(_rows_batch(chunk.rows, start + 1), position, chunk.event_time_ms)
        start += size


def _rows_batch(rows: list[bytes], first_line: int) -> LineBatch:
    """Rows without line ends as a LineBatch."""
    lengths = np.fromiter((len(r) + 1 for r in rows), np.int64, len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return LineBatch(b"\n".join(rows) + b"\n", offsets, first_line)


def ecommerce_batches(
    config: EcommerceConfig, start: int = 0, count: int | None = None
) -> Iterator[SourceBatch]:
    """`count` events (None: endless) of the shop simulator from position `start` on, as JSON
    lines whose event ids are `<run tag>:<position>` (a tag new for every call, like
    `synthetic_batches`); event times (`ts`) are simulated."""
    prefix = f"ecom{config.seed}-"
    tag = prefix + (uuid.uuid4().hex[:12] + config.fingerprint())[: 32 - len(prefix)]
    stream = EcommerceStream(config, tag)
    position = SourcePosition("synthetic", tag, 0)
    end = None if count is None else start + count
    while end is None or start < end:
        size = _SYNTHETIC_CHUNK if end is None else min(_SYNTHETIC_CHUNK, end - start)
        chunk = stream.chunk(start, size)
        yield SourceBatch(_rows_batch(chunk.rows, start + 1), position, chunk.event_time_ms)
        start += size


def check_loop(source: object, loop: bool) -> None:
    """--loop needs a file: ConfigError otherwise."""
    is_file = isinstance(source, (str, Path)) and str(source) not in ("-", "synthetic")
    if loop and not is_file:
        raise ConfigError("--loop repeats a file; it does not apply to stdin or synthetic")


SyntheticSource = Callable[[FeatureSchema, IngestSettings, int | None], Iterator[SourceBatch]]


def check_generator_layout(schema: FeatureSchema) -> None:
    """ConfigError unless `schema` has the rows of the Criteo-like generator (`SyntheticConfig`)."""
    if rowcheck_layout(schema) != (N_DENSE, N_CATS):
        raise ConfigError(
            f"--source synthetic: feature schema {schema.name!r} is not the layout of the "
            f"Criteo-like generator (tsv: label, {N_DENSE} int, {N_CATS} hex fields); ingest a "
            "file instead"
        )


def _criteo_like(
    schema: FeatureSchema, settings: IngestSettings, count: int | None
) -> Iterator[SourceBatch]:
    check_generator_layout(schema)
    config = SyntheticConfig(seed=settings.synthetic_seed,
                             events_per_s=settings.synthetic_events_per_s)  # fmt: skip
    return synthetic_batches(config, settings.synthetic_start, count)


def _shop(
    schema: FeatureSchema, settings: IngestSettings, count: int | None
) -> Iterator[SourceBatch]:
    if schema.schema_hash != load_schema("ecommerce").schema_hash:
        raise ConfigError(
            f"--source synthetic: feature schema {schema.schema_id} is not the bundled "
            "ecommerce preset its generator writes; ingest a file instead"
        )
    config = EcommerceConfig(seed=settings.synthetic_seed,
                             events_per_s=settings.synthetic_events_per_s)  # fmt: skip
    return ecommerce_batches(config, settings.synthetic_start, count)


#: The synthetic generator of each bundled schema, by schema name (`--source synthetic`).
SYNTHETIC: dict[str, SyntheticSource] = {"criteo": _criteo_like, "ecommerce": _shop}


def synthetic_source(
    schema: FeatureSchema, settings: IngestSettings, count: int | None
) -> Iterator[SourceBatch]:
    """`--source synthetic` for `schema`: its generator from `SYNTHETIC` (a schema of another
    name with the Criteo generator's layout gets that one); ConfigError when there is none."""
    make = SYNTHETIC.get(schema.name)
    if make is None and rowcheck_layout(schema) == (N_DENSE, N_CATS):
        make = _criteo_like
    if make is None:
        raise ConfigError(
            f"--source synthetic: no generator for feature schema {schema.name!r} (there are "
            f"generators for {', '.join(sorted(SYNTHETIC))}); ingest a file or stdin instead"
        )
    return make(schema, settings, count)
