"""The chain file of a version (core.chain), the record form of pyfunc inputs, and the chain
loader of the pyfunc model over local directories (no MLflow server)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.common.errors import ContractError
from stages.common.model_export import ModelSpec, apply_delta, write_export
from stages.publish.core.chain import (
    CHAIN_FORMAT_VERSION, EXPORT_PATHS, ChainLink, VersionChain, link_of, public_uri,
)
from stages.publish.core.plan import VersionInfo
from stages.common.schema import load_schema
from stages.publish.core.invocations import columns_to_rows
from stages.publish.core.requests import RequestError, RequestParser, text_to_inputs
from stages.publish.loaded import manifest_sha256
from stages.publish.synthetic import criteo_rows, delta_export, full_export

FULL = ChainLink(1, "full", 1, "runs:/r/publish/00000001", "artifacts/export", "aa")
DELTA = ChainLink(2, "delta", 2, "runs:/r/publish/00000002", "export", "bb")


def _chain(**kw: object) -> VersionChain:
    values: dict[str, object] = dict(model_name="m", registry_uri="http://h:5000", kind="delta",
                                     publish_seq=3, manifest_sha256="cc", links=(FULL, DELTA))
    values.update(kw)
    return VersionChain(**values)  # type: ignore[arg-type]


def test_round_trip_and_export_uri() -> None:
    chain = _chain()
    assert VersionChain.from_json(chain.to_json()) == chain
    assert DELTA.export_uri == "runs:/r/publish/00000002/export"
    full = _chain(kind="full", links=())
    assert VersionChain.from_json(full.to_json()) == full


@pytest.mark.parametrize("kw, message", [
    ({"kind": "full"}, "a full version has none"),
    ({"links": ()}, "a full version has none"),
    ({"links": (DELTA,)}, "does not start at a full version"),
    ({"links": (FULL, replace(DELTA, kind="full"))}, "full version inside"),
    ({"publish_seq": 4}, "skips a version"),
])
def test_invalid_chains_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        _chain(**kw)


def test_malformed_files_are_refused() -> None:
    text = _chain().to_json()
    with pytest.raises(ContractError, match="unknown keys"):
        VersionChain.from_json(text.replace('"model_name"', '"extra": 1, "model_name"'))
    with pytest.raises(ContractError, match="format"):
        VersionChain.from_json(text.replace(f'"format_version": {CHAIN_FORMAT_VERSION}',
                                            '"format_version": 99'))
    with pytest.raises(ContractError, match="malformed"):
        VersionChain.from_json("[1, 2]")
    with pytest.raises(ContractError, match="malformed"):
        VersionChain.from_json("{")


def test_link_of_and_public_uri() -> None:
    info = VersionInfo(7, "delta", 5, 6, 2, "run", 9, "ff")
    link = link_of(info, "runs:/x/publish/00000005")
    assert (link.version, link.publish_seq, link.export_path) == (7, 5, EXPORT_PATHS["delta"])
    assert public_uri("https://user:secret@mlflow.example:443/path") == (
        "https://mlflow.example:443/path")
    assert public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert public_uri("databricks") == "databricks"


CRITEO = load_schema("criteo")
PARSER = RequestParser(CRITEO)
DENSE_NAMES = [f.name for f in CRITEO.dense]
CAT_NAMES = [f.name for f in CRITEO.categorical]


def test_records_with_rows_and_fields() -> None:
    row = "\t".join(["1"] * 13 + ["68fd1e64"] * 26)
    instance = {**{n: 1 for n in DENSE_NAMES}, **{n: "68fd1e64" for n in CAT_NAMES}}
    columns = {k: [None, v, None] for k, v in instance.items()}
    columns["I1"] = [None, 1, None]
    got = PARSER.inputs(columns_to_rows({**columns, "row": [row, None, row]}, 10, PARSER))
    want = text_to_inputs("\n".join([row] * 3).encode(), 10, PARSER)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.dense, want.dense)
    with pytest.raises(RequestError, match="record 2: give either"):
        columns_to_rows({"row": [row, row], "I3": [None, 4]}, 10, PARSER)
    with pytest.raises(RequestError, match="must hold strings"):
        columns_to_rows({"row": [5]}, 10, PARSER)


def test_model_inputs_of_frames_with_missing_values() -> None:
    from stages.publish.pyfunc_model import model_inputs

    rows = criteo_rows(30, np.random.default_rng(2), label=False)
    cells = [[v or None for v in r.split("\t")] for r in rows]
    frame = pd.DataFrame(cells, columns=[*DENSE_NAMES, *CAT_NAMES])
    for name in DENSE_NAMES:
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    expected = text_to_inputs("\n".join(rows).encode(), 100, PARSER)
    for given in (frame, pd.DataFrame({"row": rows}), rows, {"rows": rows}):
        got = model_inputs(PARSER, given)
        np.testing.assert_array_equal(got.ids, expected.ids)
        np.testing.assert_array_equal(got.dense, expected.dense)
    with pytest.raises(Exception, match="no input columns"):
        model_inputs(PARSER, pd.DataFrame(index=range(3)))


def test_materialize_chain_from_local_versions(tmp_path: Path) -> None:
    from stages.publish.pyfunc_model import materialize_chain

    rng = np.random.default_rng(1)
    model = full_export(ModelSpec("wide_deep", 4, (8,)), rng, n_rows=300)
    exports = [model]
    for seq in (2, 3):
        exports.append(delta_export(model, rng, change=0.2, evict=0.05, add=10, seq=seq))
        model = apply_delta(model, exports[-1])
    links = []
    for export in exports[:2]:
        kind = export.kind
        root = tmp_path / f"v{export.export_seq}"
        directory = write_export(export, root / EXPORT_PATHS[kind])
        links.append(ChainLink(export.export_seq, kind, export.export_seq, str(root),
                               EXPORT_PATHS[kind], manifest_sha256(directory)))
    own = write_export(exports[2], tmp_path / "v3" / "export")
    chain = VersionChain("m", "http://unused", "delta", 3, manifest_sha256(own), tuple(links))
    got = materialize_chain(chain, own, tmp_path / "work")
    np.testing.assert_array_equal(got.ids, model.ids)
    np.testing.assert_array_equal(got.rows, model.rows)
    bad = replace(chain, links=(links[0], replace(links[1], manifest_sha256="00")))
    with pytest.raises(ContractError, match="does not match its sha256"):
        materialize_chain(bad, own, tmp_path / "work2")
