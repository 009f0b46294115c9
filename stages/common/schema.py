"""The feature schema: which fields an event has and how each becomes a model input.

A schema is a YAML file validated by the pydantic models below, picked by `FRESHREC_SCHEMA`
(a bundled preset name, see `stages/common/presets/`, or a path; default `criteo`). It declares

- `format`: how a raw row is written: `tsv`/`csv` by position (`columns`, default: the label,
  then every field in declaration order) or by a header line (`header: true`), or `jsonl` (one
  JSON object per line, each field found by its dotted `path`, default its name);
- `label` (0/1), and optionally `event_id` and `event_time` fields;
- `dense` fields (int or float): clipped, transformed (`log1p`: sign(x)*log1p(|x|);
  `standardize`: by the model's running mean and variance), a declared value when missing; or,
  with `buckets`, turned into a categorical field by their boundaries;
- `categorical` fields (`str`, `int`, or `hex`: up to 8 hex digits), hashed to 64-bit ids per
  field, with an embedding dimension each, optionally sharing another field's table (`share`);
- `multi` fields: a list per event (a JSON array, or `separator`-joined in a delimited cell),
  at most `max_len` values, pooled by `mean` or `sum`;
- `crosses` of categorical fields: extra ids for the wide part of Wide&Deep.

A mistake fails at start-up with one line naming the field and the problem (`SchemaError`).
The schema's `name` and the hash of its content (`schema_hash`) travel with samples,
checkpoints and model versions, so that a stage given data of another schema stops instead of
mis-reading it. Nothing here imports numpy: `layout.py` compiles a schema to model inputs.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.common.errors import ConfigError

PRESET_DIR = Path(__file__).with_name("presets")
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_PATH = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
Dim = Annotated[int, Field(ge=1, le=1024)]


class SchemaError(ConfigError):
    """A feature schema is malformed, or data/models of another schema were given."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Field(_Strict):
    name: str = Field(pattern=_NAME, description="The field's name (model input, request key).")
    path: str | None = Field(
        None, pattern=_PATH, description="jsonl: dotted path of the value; default: the name."
    )

    @property
    def json_path(self) -> tuple[str, ...]:
        return tuple((self.path or self.name).split("."))


class LabelField(_Field):
    """The 0/1 click label."""


class EventIdField(_Field):
    """A unique id per event (used for deduplication instead of the source position)."""


class EventTimeField(_Field):
    unit: Literal["ms", "s"] = Field("ms", description="Epoch milliseconds or seconds.")


class DenseField(_Field):
    type: Literal["int", "float"] = "float"
    missing: float = Field(0.0, description="The model input when the value is missing.")
    clip: tuple[float, float] | None = Field(None, description="[low, high], applied first.")
    transform: Literal["none", "log1p", "standardize"] = "none"
    buckets: tuple[float, ...] | None = Field(
        None, min_length=1, max_length=1000,
        description="Increasing boundaries: the field becomes categorical (bucket index).",
    )
    dim: Dim | None = Field(None, description="Embedding dimension of a bucketized field.")

    @model_validator(mode="after")
    def _check(self) -> DenseField:
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"clip low must be below high, got {list(self.clip)}")
        if self.buckets is not None:
            if any(b <= a for a, b in zip(self.buckets, self.buckets[1:])):
                raise ValueError("buckets must be strictly increasing")
            if self.transform != "none":
                raise ValueError("a bucketized field takes no transform")
        elif self.dim is not None:
            raise ValueError("dim is only for a field with buckets")
        return self


class CategoricalField(_Field):
    type: Literal["str", "int", "hex"] = "str"
    dim: Dim | None = Field(None, description="Embedding dimension; default: the model's.")
    share: str | None = Field(None, description="Use this other field's embedding table.")


class MultiField(CategoricalField):
    max_len: int = Field(ge=1, le=256, description="Values kept per event (the first ones).")
    pooling: Literal["mean", "sum"] = "mean"
    separator: str = Field("|", min_length=1, max_length=1,
                           description="Delimited formats: the separator inside the cell.")


class Cross(_Strict):
    fields: tuple[str, ...] = Field(min_length=2, max_length=4)
    name: str | None = Field(None, pattern=_NAME, description="Default: the names joined by _x_.")

    @property
    def cross_name(self) -> str:
        return self.name or "_x_".join(self.fields)


class InputFormat(_Strict):
    kind: Literal["tsv", "csv", "jsonl"]
    header: bool = Field(False, description="Delimited: the first line names the columns.")
    columns: tuple[str, ...] | None = Field(
        None, description="Delimited by position: the column names in order (a name may be "
        "`_` for a column to ignore); default: label, event id, event time, then the fields.",
    )


class FeatureSchema(_Strict):
    """A declared feature schema (see the module docstring)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,31}$")
    description: str = ""
    format: InputFormat
    label: LabelField
    event_id: EventIdField | None = None
    event_time: EventTimeField | None = None
    dense: tuple[DenseField, ...] = ()
    categorical: tuple[CategoricalField, ...] = ()
    multi: tuple[MultiField, ...] = ()
    crosses: tuple[Cross, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> FeatureSchema:
        if not (self.dense or self.categorical or self.multi):
            raise ValueError("declare at least one dense, categorical or multi field")
        seen: dict[str, str] = {}
        for kind, field in self._named():
            if field.name in seen:
                raise ValueError(f"{kind} {field.name!r}: name already used by a {seen[field.name]}")
            seen[field.name] = kind
        id_fields = {f.name: f for f in (*self.categorical, *self.multi)}
        for field in id_fields.values():
            if field.share is None:
                continue
            target = id_fields.get(field.share)
            if target is None or target.name == field.name:
                raise ValueError(f"{field.name}.share: {field.share!r} is not another "
                                 "categorical or multi field")
            if target.share is not None:
                raise ValueError(f"{field.name}.share: {field.share!r} shares a table itself; "
                                 f"share {target.share!r} instead")
            if target.type != field.type:
                raise ValueError(f"{field.name}.share: {field.share!r} has type {target.type}, "
                                 f"this field {field.type}")
        single = {f.name for f in self.categorical} | {f.name for f in self.dense if f.buckets}
        for cross in self.crosses:
            for name in cross.fields:
                if name not in single:
                    raise ValueError(f"cross {cross.cross_name}: {name!r} is not a categorical "
                                     "(or bucketized dense) field")
            if len(set(cross.fields)) != len(cross.fields):
                raise ValueError(f"cross {cross.cross_name}: a field appears twice")
            if cross.cross_name in seen:
                raise ValueError(f"cross {cross.cross_name}: name already used")
            seen[cross.cross_name] = "cross"
        self._check_columns(seen)
        return self

    def _named(self) -> list[tuple[str, _Field]]:
        out: list[tuple[str, _Field]] = [("label", self.label)]
        out += [(k, f) for k, f in (("event_id", self.event_id), ("event_time", self.event_time))
                if f is not None]
        out += [("dense field", f) for f in self.dense]
        out += [("categorical field", f) for f in self.categorical]
        out += [("multi field", f) for f in self.multi]
        return out

    def _check_columns(self, seen: dict[str, str]) -> None:
        fmt = self.format
        if fmt.kind == "jsonl":
            if fmt.header or fmt.columns is not None:
                raise ValueError("format: header and columns are for tsv/csv, not jsonl")
            return
        if fmt.header and fmt.columns is not None:
            raise ValueError("format: give header: true or columns, not both")
        if fmt.columns is None:
            return
        named = [c for c in fmt.columns if c != "_"]
        for column in named:
            if column not in seen or seen[column] == "cross":
                raise ValueError(f"format.columns: {column!r} is not a declared field")
        if len(set(named)) != len(named):
            raise ValueError("format.columns: a column is named twice")
        missing = [name for name, kind in seen.items() if kind != "cross" and name not in named]
        if missing:
            raise ValueError(f"format.columns: no column for {missing[0]!r}")

    # -- derived ------------------------------------------------------------------------------

    @cached_property
    def schema_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical content: what must match between
        samples, checkpoints and model versions. The description does not count."""
        data = self.model_dump(mode="json", exclude={"description"})
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def schema_id(self) -> str:
        """`<name>@<hash>`, how logs, tags and errors name the schema."""
        return f"{self.name}@{self.schema_hash}"

    def field_names(self) -> tuple[str, ...]:
        """Every input field a request or row may carry (label and event fields excluded)."""
        return tuple(f.name for f in (*self.dense, *self.categorical, *self.multi))

    def columns(self) -> tuple[str, ...]:
        """Delimited formats by position: the column names in order (`_` = ignored)."""
        if self.format.columns is not None:
            return self.format.columns
        return tuple(f.name for _, f in self._named())

    def check_same(self, other_hash: str, what: str) -> None:
        """SchemaError unless `other_hash` (carried by `what`) is this schema's hash."""
        if other_hash != self.schema_hash:
            raise SchemaError(
                f"{what} was made with feature schema {other_hash}, this stage runs "
                f"{self.schema_id}: set FRESHREC_SCHEMA to the schema it was made with, or start "
                "from an empty store/state"
            )


def preset_names() -> tuple[str, ...]:
    """The bundled presets (`FRESHREC_SCHEMA=<name>`)."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


def parse_schema(data: Any, source: str = "schema") -> FeatureSchema:
    """A FeatureSchema from decoded YAML/JSON; SchemaError with one line naming the problem."""
    try:
        return FeatureSchema.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(f"{source}: {_first_problem(exc, data)}") from None


def load_schema(spec: str) -> FeatureSchema:
    """The schema named by `FRESHREC_SCHEMA`: a preset name or a path to a YAML file."""
    import yaml

    path = PRESET_DIR / f"{spec}.yaml" if spec in preset_names() else Path(spec)
    if not path.is_file():
        raise SchemaError(
            f"feature schema {spec!r} is neither a preset ({', '.join(preset_names())}) nor a "
            "file: set FRESHREC_SCHEMA to one of them"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path.name}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_schema(data, path.name)


def _first_problem(exc: ValidationError, data: Any) -> str:
    error = exc.errors()[0]
    loc = _location(error["loc"], data)
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """`categorical[2] ('user').dim` rather than `categorical.2.dim`."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and \
                isinstance(node[item], dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]" + (f" ({name!r})" if name else "")]
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)
