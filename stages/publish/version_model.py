"""Saving a registry version as an MLflow pyfunc model (full and delta versions alike).

Layout of a version directory (`publish/<seq:08d>/` of the publisher run):

    MLmodel, python_model.py, code/stages/..., requirements.txt, python_env.yaml, conda.yaml,
    input_example.json, serving_input_example.json     the pyfunc model (models from code)
    artifacts/chain.json                               `core.chain.VersionChain`
    artifacts/export/                                  the export of a full version
    export/                                            the export of a delta version

A delta keeps its export outside `artifacts/` where serving (and releases before this one)
read it; the pyfunc model finds it next to its chain file. No pickle anywhere.

Signature: the inputs are the Criteo columns I1..I13 (double, optional) and C1..C26 (string,
optional), plus `row` (string, optional): one raw tab-separated Criteo row per record (39
fields, or 40 with the label first) for callers that hold raw rows. The output is one double
per record (the click probability). The integer columns are declared double because MLflow
casts a `long` column with a missing value to int64 and refuses it (its own advice: declare
integer columns that may miss values as double); a pandas caller passes float64 columns.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from stages.common.criteo import CAT_NAMES, DENSE_NAMES
from stages.common.errors import require
from stages.publish.core.chain import CHAIN_FILE, VersionChain
from stages.publish.core.requests import ROW_COLUMN

_HERE = Path(__file__).resolve().parent
# What the pyfunc model imports, copied into the model (code_paths): loading it needs no
# freshrec installation.
_CODE = ("__init__.py", "publish/__init__.py", "publish/loaded.py", "publish/pyfunc_model.py",
         "publish/core/__init__.py", "publish/core/requests.py", "publish/core/chain.py",
         "publish/core/plan.py")
# Two records of the input example: one complete, one with missing values. Made-up values in
# the Criteo format (8 hex digits), not rows of the data set.
_EXAMPLE_DENSE = ((1, 1, 5, 0, 1382, 4, 15, 2, 181, 1, 2, None, 2),
                  (None, 0, 44, 1, 102, 8, 2, 2, 4, 1, 1, None, 4))
_EXAMPLE_CATS = tuple(
    tuple(None if i == 21 else f"{(row * 26 + i + 1) * 2654435761 % 2**32:08x}"
          for i in range(26))
    for row in range(2)
)


def _code(into: Path) -> Path:
    """A minimal copy of the `stages` package the pyfunc model needs."""
    root = _HERE.parent
    pkg = into / "stages"
    for rel in _CODE:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, pkg / rel)
    shutil.copytree(root / "common", pkg / "common", ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def signature() -> Any:
    """The model signature of every version (see the module docstring)."""
    schema: Any = require("mlflow.types.schema", "publish")
    models: Any = require("mlflow.models", "publish")
    inputs = [schema.ColSpec("double", name, required=False) for name in DENSE_NAMES]
    inputs += [schema.ColSpec("string", name, required=False) for name in CAT_NAMES]
    inputs.append(schema.ColSpec("string", ROW_COLUMN, required=False))
    return models.ModelSignature(inputs=schema.Schema(inputs),
                                 outputs=schema.Schema([schema.ColSpec("double")]))


def input_example() -> Any:
    """Two records in the column form, the second with missing values (NaN / None)."""
    import pandas

    records = [
        {**{n: (float("nan") if v is None else float(v)) for n, v in zip(DENSE_NAMES, dense)},
         **dict(zip(CAT_NAMES, cats))}
        for dense, cats in zip(_EXAMPLE_DENSE, _EXAMPLE_CATS)
    ]
    return pandas.DataFrame.from_records(records, columns=[*DENSE_NAMES, *CAT_NAMES])


def save_version_model(export_dir: Path, chain: VersionChain, into: Path) -> None:
    """Save the pyfunc model of a version into the (absent) directory `into`: a full version
    with `export_dir` as its artifact `export`, a delta with `export_dir` copied to `export/`."""
    pyfunc: Any = require("mlflow.pyfunc", "publish")
    mlflow: Any = require("mlflow", "publish")
    import numpy
    import pandas
    import pyarrow

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        chain_file = Path(tmp) / CHAIN_FILE
        chain_file.write_text(chain.to_json())
        artifacts = {"chain": str(chain_file)}
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
            signature=signature(),
            input_example=input_example(),
            # explicit: inferring them loads the model in a subprocess (tens of seconds)
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"numpy=={numpy.__version__}",
                f"pandas=={pandas.__version__}",
                f"pyarrow=={pyarrow.__version__}",
            ],
        )
    if chain.kind == "delta":
        shutil.copytree(export_dir, into / "export")
