"""Saving a registry version as an MLflow pyfunc model (full and delta versions alike).

Layout of a version directory (`publish/<seq:08d>/` of the publisher run):

    MLmodel, python_model.py, code/stages/..., requirements.txt, python_env.yaml, conda.yaml,
    input_example.json, serving_input_example.json     the pyfunc model (models from code)
    artifacts/chain.json                               `core.chain.VersionChain`
    artifacts/export/                                  the export of a full version
    export/                                            the export of a delta version

A delta keeps its export outside `artifacts/` where serving (and releases before this one)
read it; the pyfunc model finds it next to its chain file. No pickle anywhere.

The version carries its feature schema: the artifact `schema` (`artifacts/schema.json`, the
schema's canonical JSON, `loaded.schema_json`), which the pyfunc model, serving and evaluate parse
requests with (no FRESHREC_SCHEMA needed where the model is loaded).

Signature, generated from the schema (`signature`): one optional column per input field, by
name: a dense field `double` (integers too: MLflow casts a `long` column with a missing value
to int64 and refuses it, its own advice is to declare such columns double), a categorical
field `string` (hex and str) or `long` (int), a multi field an array of those; plus `row`
(string, optional): one raw row in the schema's format per record for callers that hold raw
rows. The output is one double per record (the click probability). The input example is two
records of made-up values, the second with missing values.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from stages.common.errors import require
from stages.common.model_export import ModelSpec, read_manifest
from stages.common.schema import CategoricalField, FeatureSchema
from stages.publish.core.chain import CHAIN_FILE, VersionChain
from stages.publish.core.requests import ROW_COLUMN
from stages.publish.loaded import SCHEMA_ARTIFACT, SCHEMA_FILE, schema_json, schema_of_spec

_HERE = Path(__file__).resolve().parent
# What the pyfunc model imports, copied into the model (code_paths): loading it needs no
# freshrec installation.
_CODE = ("__init__.py", "publish/__init__.py", "publish/loaded.py", "publish/pyfunc_model.py",
         "publish/core/__init__.py", "publish/core/requests.py", "publish/core/records.py",
         "publish/core/invocations.py", "publish/core/chain.py", "publish/core/plan.py",
         "publish/core/text_rows.py", "publish/core/scoring.py")
def _code(into: Path) -> Path:
    """A minimal copy of the `stages` package the pyfunc model needs."""
    root = _HERE.parent
    pkg = into / "stages"
    for rel in _CODE:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, pkg / rel)
    shutil.copytree(root / "common", pkg / "common", ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def _id_type(field: CategoricalField) -> str:
    return "long" if field.type == "int" else "string"


def signature(schema: FeatureSchema) -> Any:
    """The model signature of a version of `schema` (see the module docstring)."""
    types: Any = require("mlflow.types.schema", "publish")
    models: Any = require("mlflow.models", "publish")
    inputs = [types.ColSpec("double", f.name, required=False) for f in schema.dense]
    inputs += [types.ColSpec(_id_type(f), f.name, required=False) for f in schema.categorical]
    inputs += [types.ColSpec(types.Array(_id_type(f)), f.name, required=False)
               for f in schema.multi]
    inputs.append(types.ColSpec("string", ROW_COLUMN, required=False))
    return models.ModelSignature(inputs=types.Schema(inputs),
                                 outputs=types.Schema([types.ColSpec("double")]))


def _example_id(field: CategoricalField, k: int) -> Any:
    value = (k * 2654435761 + len(field.name)) % 2**32
    if field.type == "hex":
        return f"{value:08x}"
    return value if field.type == "int" else f"{field.name}-{value % 97}"


def input_example(schema: FeatureSchema) -> Any:
    """Two records in the column form, the second with missing values (NaN / None)."""
    import pandas

    records = []
    for row in range(2):
        record: dict[str, Any] = {}
        for j, dense in enumerate(schema.dense):
            missing = row == 1 and j % 2 == 0
            record[dense.name] = float("nan") if missing else float(row * 7 + j + 1)
        for j, cat in enumerate(schema.categorical):
            record[cat.name] = None if row == 1 and j % 3 == 1 else _example_id(cat, row + j)
        for multi in schema.multi:
            record[multi.name] = [_example_id(multi, row + i) for i in range(2 - row)]
        records.append(record)
    return pandas.DataFrame.from_records(records, columns=list(schema.field_names()))


def save_version_model(export_dir: Path, chain: VersionChain, into: Path,
                       schema: FeatureSchema) -> None:
    """Save the pyfunc model of a version of `schema` into the (absent) directory `into`: a
    full version with `export_dir` as its artifact `export`, a delta with `export_dir` copied
    to `export/`; the schema as the artifact `schema`. ContractError when the export was made
    with another schema."""
    schema_of_spec(ModelSpec.from_dict(read_manifest(export_dir)["spec"]), schema)
    pyfunc: Any = require("mlflow.pyfunc", "publish")
    mlflow: Any = require("mlflow", "publish")
    import numpy
    import pandas
    import pyarrow
    import pydantic
    import yaml

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        chain_file = Path(tmp) / CHAIN_FILE
        chain_file.write_text(chain.to_json())
        schema_file = Path(tmp) / SCHEMA_FILE
        schema_file.write_text(schema_json(schema))
        artifacts = {"chain": str(chain_file), SCHEMA_ARTIFACT: str(schema_file)}
        if chain.kind == "full":
            # MLflow names an artifact directory after its source: it must be `export`
            # (`core.chain.EXPORT_PATHS`)
            if export_dir.name != "export":
                export_dir = Path(shutil.copytree(export_dir, Path(tmp) / "export"))
            artifacts["export"] = str(export_dir)
        # MLflow nags about type hints on predict; the model has none on purpose
        warnings.simplefilter("ignore", UserWarning)
        pyfunc.save_model(
            path=str(into),
            python_model=str(_HERE / "pyfunc_entry.py"),
            artifacts=artifacts,
            code_paths=[str(_code(Path(tmp) / "code"))],
            signature=signature(schema),
            input_example=input_example(schema),
            # explicit: inferring them loads the model in a subprocess (tens of seconds)
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"numpy=={numpy.__version__}",
                f"pandas=={pandas.__version__}",
                f"pyarrow=={pyarrow.__version__}",
                f"pydantic=={pydantic.__version__}",
                f"pyyaml=={yaml.__version__}",
            ],
        )
    if chain.kind == "delta":
        shutil.copytree(export_dir, into / "export")
