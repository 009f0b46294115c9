"""The demo's serving process: `freshrec serve` following the `latest` alias, and a query with
a few rows of the feature schema's own format (`probe_rows`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.deployments import PROJECT_ROOT
from infra.services.logpipe import wrapped
from stages.common.errors import ConfigError
from stages.common.settings import CommonSettings


def start(common: CommonSettings, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    """Start serving `common.model_name@latest` on 127.0.0.1:`port` (logs in `log_dir`)."""
    freshrec = Path(sys.executable).with_name("freshrec")
    argv = [str(freshrec), "serve", "--model", common.model_name, "--alias", "latest",
            "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(  # output through the rotating log wrapper (infra/services/logpipe)
        wrapped(argv, log_dir / "serve.log"),
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def probe_rows(common: CommonSettings, source: str, n: int = 5) -> list[bytes]:
    """`n` rows of `common.schema()` for querying serving: the first rows of the schema's
    synthetic generator (seed 7), or, for a schema without one, the first rows of the demo's
    source file (in the events' column order). ConfigError when there are none (a synthetic
    demo of a schema without a generator: raised before anything starts)."""
    from stages.common.settings import load_settings
    from stages.ingest.settings import IngestSettings
    from stages.ingest.sources import synthetic_source

    schema = common.schema()
    settings = load_settings(IngestSettings, synthetic_seed=7, synthetic_start=0)
    try:
        batches = synthetic_source(schema, settings, n)
    except ConfigError:
        if source == "synthetic":
            raise
        return _file_rows(common, Path(source), n)
    lines = next(batches).lines
    return [lines.line(i) for i in range(len(lines))]


def _file_rows(common: CommonSettings, path: Path, n: int) -> list[bytes]:
    from stages.common.rows import RowParser, read_header
    from stages.ingest.sources import file_batches

    schema = common.schema()
    first = next(file_batches(path, chunk_bytes=1 << 20, max_line=1 << 20), None)
    if first is None:
        raise ConfigError(f"--source {path} is empty: the demo needs rows to stream and query")
    rows = [first.lines.line(i) for i in range(min(len(first.lines), n + 1))]
    header = read_header(schema, rows.pop(0), str(path)) if schema.format.header else None
    parser = RowParser.for_schema(schema, header)
    return [parser.to_wire(row) for row in rows[:n]]


def query(
    port: int, expected_version: int | None, rows: list[bytes], timeout_s: float = 60.0
) -> tuple[int | None, list[float]]:
    """(version that answered, predictions) for `rows` (raw rows of the served schema, sent to
    /predict as text, one per line).

    Waits up to `timeout_s` for serving to load a model and, when `expected_version` is given,
    to have swapped to it (serving follows the alias by polling).
    """
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    answer: tuple[int | None, list[float]] = (None, [])
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"{base}/predict", data=b"\n".join(rows), headers={"Content-Type": "text/plain"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.loads(response.read())
            with urllib.request.urlopen(f"{base}/version", timeout=10) as response:
                version = json.loads(response.read()).get("version")
            answer = (int(version) if version is not None else None), list(body["predictions"])
            if expected_version is None or answer[0] == expected_version:
                return answer
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(2)
    return answer


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop serving (SIGTERM, then SIGKILL after 10 s)."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
