"""Serving speed under load: `freshrec serve` beside `mlflow models serve`, same version.

One run: a local MLflow server (started here unless --mlflow), one full synthetic export of
the default model (Wide&Deep, d=16, MLP 128-64, --rows table rows) logged by a trainer run and
registered by the real publisher as v1; then `freshrec serve` and `mlflow models serve -m
models:/NAME/1 --env-manager local -w 1` started side by side and loaded one case at a time
with `wrk` (a Lua script sets the POST body), --duration s per case after a 2 s warm-up:

  raw rows    freshrec POST /predict text/plain; MLflow POST /invocations dataframe_split with
              the `row` column (MLflow has no text route)
  JSON        both POST /invocations dataframe_split with a column per field of the Criteo
              preset (`FeatureSchema.field_names()`)

each with 1-row and 1,000-row requests and 1 and 50 connections (wrk -c). Reported: p50 and
p99 latency (wrk --latency), requests/s and rows/s. Then the ceiling of this machine for the
1-row case at 50 connections: the same wrk run against a route that answers a fixed body
without reading it, under the same uvicorn (uvloop + httptools), as a Starlette route and as a
bare ASGI app. Then an in-process breakdown of one request's time in freshrec (parse, hash,
lookup, MLP, JSON) with time.perf_counter.

Run: .venv/bin/python bench/serving_bench.py [--rows 200000] [--duration 10] [--workers N]
Needs wrk (apt-get install -y wrk). Writes bench/RESULTS-serving.md's tables to stdout and
to bench/out/serving.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from stages.common.model_export import TAG_EXPORT_SEQ, TAG_ROLE, ModelSpec, artifact_path
from stages.common.model_export import write_export
from stages.common.schema import load_schema
from stages.common.settings import CommonSettings, load_settings
from stages.publish.publisher import run_publisher
from stages.publish.settings import PublishSettings
from stages.publish.synthetic import criteo_rows, full_export

BIN = Path(sys.executable).parent
OUT = Path(__file__).with_name("out")
SCHEMA = load_schema("criteo")  # the rows of `criteo_rows`, what the default model serves


def publish_version(uri: str, n_rows: int, work: Path) -> CommonSettings:
    """A full export of the default model, registered by the real publisher as v1."""
    from mlflow import MlflowClient

    name = f"servebench{uuid.uuid4().hex[:6]}"
    common = load_settings(CommonSettings, mlflow_tracking_uri=uri, mlflow_experiment=name,
                           model_name=name, state_dir=work / "state")
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment(name),
                               tags={TAG_ROLE: "trainer"}).info.run_id
    export = full_export(ModelSpec("wide_deep", 16, (128, 64), 0), np.random.default_rng(0),
                         n_rows=n_rows)
    directory = write_export(export, work / "export")
    client.log_artifacts(run_id, str(directory), artifact_path(export.export_seq))
    client.set_tag(run_id, TAG_EXPORT_SEQ, str(export.export_seq))
    summary = run_publisher(common, PublishSettings(), once=True)
    assert summary.last_version == 1, summary
    return common


def bodies(n: int, rng: np.random.Generator) -> dict[str, tuple[str, bytes]]:
    """name -> (content type, body) of n rows; the rows of the real synthetic vocabulary."""
    rows = criteo_rows(n, rng, label=False)
    names = list(SCHEMA.field_names())  # the columns of a row without its label, in order
    numbers = {f.name for f in SCHEMA.dense}
    data = [[None if not v else (int(v) if k in numbers else v) for k, v in
             zip(names, r.split("\t"))] for r in rows]
    return {
        "text": ("text/plain", "\n".join(rows).encode()),
        "row_split": ("application/json", json.dumps(
            {"dataframe_split": {"columns": ["row"], "data": [[r] for r in rows]}}).encode()),
        "split": ("application/json", json.dumps(
            {"dataframe_split": {"columns": names, "data": data}}).encode()),
    }


def wait_ping(proc: subprocess.Popen[bytes], base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base} did not answer /ping in {timeout_s} s")
        time.sleep(0.5)


_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "{ctype}"
local f = io.open("{path}", "rb")
wrk.body = f:read("*a")
f:close()
"""
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}
# What the machine can do at all: a fixed answer, as a Starlette route and as bare ASGI.
_CEILING_APPS = """from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"predictions":[0.5]}'


async def fixed(request):
    await request.body()
    return Response(BODY, media_type="application/json")

starlette_app = Starlette(routes=[Route("/predict", fixed, methods=["POST"])])


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})
"""


def wrk(url: str, ctype: str, body: bytes, connections: int, duration: int, tmp: Path
        ) -> dict[str, float]:
    """One wrk run: p50/p99 ms, requests/s, non-2xx count."""
    path = tmp / f"body-{uuid.uuid4().hex[:6]}"
    path.write_bytes(body)
    script = tmp / f"{path.name}.lua"
    script.write_text(_LUA.format(ctype=ctype, path=path))
    threads = min(2, connections)
    subprocess.run(["wrk", "-t1", "-c1", "-d2s", "-s", str(script), url],
                   capture_output=True, check=True)  # warm-up
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
                          "--timeout", "30s", "--latency", "-s", str(script), url],
                         capture_output=True, check=True, text=True).stdout
    pct = {m[0]: float(m[1]) * _UNIT[m[2]]
           for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50": pct["50"], "p99": pct["99"], "rps": rps,
            "non2xx": float(bad.group(1)) if bad else 0.0}


def breakdown(common: CommonSettings, work: Path, reps: dict[int, int]) -> list[str]:
    """Where one request's time goes in freshrec serve, per part, in process."""
    import orjson

    from stages.common.reference_model import logits
    from stages.publish.core.invocations import json_invocation
    from stages.publish.core.requests import RequestParser
    from stages.publish.core.scoring import Scorer
    from stages.publish.registry import Registry

    (work / "breakdown").mkdir(exist_ok=True)
    model = Registry(common).materialize(1, work / "breakdown")
    spec = model.spec
    parser = RequestParser(SCHEMA, spec.embedding_dim)
    scorer = Scorer(model)  # serving's: hash index, float64 weights made once
    lines = ["| rows | form | parse | dense transform | hash | lookup | MLP | JSON reply | "
             "total | rows/s (1 core) |", "|---|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(7)
    for n, count in reps.items():
        for form, parse in (("text", parser.text),
                            ("split", lambda b, m: json_invocation(b, m, parser))):
            body = bodies(n, rng)[form][1]
            parts = dict.fromkeys(("parse", "dense", "hash", "lookup", "mlp", "json"), 0.0)
            for _ in range(count):
                t0 = time.perf_counter()
                raw = parse(body, 10_000).raw
                t1 = time.perf_counter()
                dense = parser.transform.dense(raw)
                t2 = time.perf_counter()
                ids = parser.transform.ids(raw)
                t3 = time.perf_counter()
                rows = scorer.lookup(ids)
                t4 = time.perf_counter()
                weights = None if spec.simple else spec.slot_weights(ids)
                z = logits(spec, scorer.weights, rows, dense, weights, dtype=np.float32)
                probs = 1.0 / (1.0 + np.exp(-z))
                t5 = time.perf_counter()
                orjson.dumps({"predictions": probs}, option=orjson.OPT_SERIALIZE_NUMPY)
                t6 = time.perf_counter()
                for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                    parts[key] += dt
            total = sum(parts.values()) / count
            cells = " | ".join(f"{v / count * 1e3:.3f}" for v in parts.values())
            lines.append(f"| {n:,} | {form} | {cells} | {total * 1e3:.3f} | "
                         f"{n / total:,.0f} |")
    lines.append("")
    lines.append("(ms per request, mean over many requests; `text` = raw rows as /predict "
                 "takes them, `split` = dataframe_split JSON as /invocations takes it.)")
    return lines


def ceiling(body: bytes, duration: int, work: Path, env: dict[str, str]) -> list[str]:
    """wrk -c 50 against a fixed answer under `freshrec serve`'s uvicorn settings."""
    from infra.services import free_port

    (work / "ceiling.py").write_text(_CEILING_APPS)
    lines = ["| app | p50 ms | p99 ms | requests/s |", "|---|---|---|---|"]
    for name in ("starlette_app", "asgi_app"):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(work), f"ceiling:{name}",
             "--port", str(port), "--no-access-log", "--log-level", "warning"],
            env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.post(f"http://127.0.0.1:{port}/predict", content=b"", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"the {name} ceiling app did not start") from None
                    time.sleep(0.3)
            r = wrk(f"http://127.0.0.1:{port}/predict", "text/plain", body, 50, duration, work)
            lines.append(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:,.0f} |")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="embedding table rows")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk case")
    parser.add_argument("--mlflow", help="MLflow server URI (default: start one here)")
    parser.add_argument("--only", choices=("freshrec", "mlflow"), help="serve only one side")
    parser.add_argument("--workers", type=int, default=1,
                        help="freshrec serve --workers (the table's header says which)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    from infra.services import free_port, start_service

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    service = None
    uri = args.mlflow
    if uri is None:
        service = start_service("mlflow", free_port(), work / "mlflow")
        uri = service.url
    procs: list[subprocess.Popen[bytes]] = []
    try:
        common = publish_version(uri, args.rows, work)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
               "FRESHREC_MLFLOW_TRACKING_URI": uri, "FRESHREC_MODEL_NAME": common.model_name,
               "FRESHREC_STATE_DIR": str(work / "state"),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        ports = {"freshrec": free_port(), "mlflow": free_port()}
        sides = [args.only] if args.only else ["freshrec", "mlflow"]
        commands = {
            "freshrec": [str(BIN / "freshrec"), "serve", "--alias", "production",
                         "--port", str(ports["freshrec"]), "--workers", str(args.workers)],
            "mlflow": [str(BIN / "mlflow"), "models", "serve", "-m",
                       f"models:/{common.model_name}/1", "--env-manager", "local",
                       "-h", "127.0.0.1", "-p", str(ports["mlflow"]), "-w", "1"],
        }
        logs = {side: open(work / f"{side}.log", "wb") for side in sides}
        for side in sides:
            # own session: MLflow execs uvicorn in a child, stopped with its process group
            procs.append(subprocess.Popen(commands[side], env=env, stdout=logs[side],
                                          stderr=subprocess.STDOUT, start_new_session=True))
        for side, proc in zip(sides, procs):
            wait_ping(proc, f"http://127.0.0.1:{ports[side]}", 300)
        rng = np.random.default_rng(1)
        cases = {1: bodies(1, rng), 1000: bodies(1000, rng)}
        routes = {("freshrec", "raw"): ("/predict", "text"),
                  ("mlflow", "raw"): ("/invocations", "row_split"),
                  ("freshrec", "json"): ("/invocations", "split"),
                  ("mlflow", "json"): ("/invocations", "split")}
        table = [f"freshrec serve --workers {args.workers}; mlflow models serve -w 1", "",
                 "| server | input | route | rows/request | connections | p50 ms | p99 ms | "
                 "requests/s | rows/s |", "|---|---|---|---|---|---|---|---|---|"]
        results: list[dict[str, Any]] = []
        for form in ("raw", "json"):
            for n in (1, 1000):
                for connections in (1, 50):
                    for side in sides:
                        route, body_name = routes[(side, form)]
                        ctype, body = cases[n][body_name]
                        url = f"http://127.0.0.1:{ports[side]}{route}"
                        r = wrk(url, ctype, body, connections, args.duration, work)
                        results.append({"server": side, "form": form, "rows": n,
                                        "connections": connections, **r})
                        table.append(
                            f"| {side} | {form} | {route} ({body_name}) | {n:,} | "
                            f"{connections} | {r['p50']:.2f} | {r['p99']:.2f} | "
                            f"{r['rps']:,.0f} | {r['rps'] * n:,.0f} |"
                            + (f" non-2xx: {int(r['non2xx'])}" if r["non2xx"] else ""))
                        print(table[-1], flush=True)
        lines = table + ["", "### The ceiling: a fixed answer, 1-row body, 50 connections", ""]
        lines += ceiling(cases[1]["text"][1], args.duration, work, env)
        lines += ["", "### Where the time goes (freshrec, in process)", ""]
        lines += breakdown(common, work, {1: 3000, 1000: 100})
        OUT.mkdir(exist_ok=True)
        (OUT / "serving.md").write_text("\n".join(lines) + "\n")
        (OUT / "serving.json").write_text(json.dumps(results, indent=1))
        print("\n".join(lines))
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if service is not None:
            service.stop()


if __name__ == "__main__":
    main()
