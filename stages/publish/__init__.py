"""The publish stage: trainer exports -> MLflow registry versions -> serving.

Pure core in `core/` (folding and merging deltas, full-or-delta, tags, quality gate, request
parsing, metrics, freshness); adapters: `registry` (MLflow), `publisher` (the loop,
`run_publisher`), `serving` (Starlette app + alias follower), `evaluate`, `pyfunc_model`
(plain-MLflow pyfunc of full versions, logged as models-from-code via `pyfunc_entry.py`).

Commands: `freshrec publish [--once] [--interval S]`, `freshrec publish rollback`,
`freshrec serve --model NAME --alias production [--host H --port P]`,
`freshrec evaluate --model URI --data FILE`. Settings: `FRESHREC_PUBLISH_*` (settings.py).
"""
