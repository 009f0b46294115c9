"""The base of every record that crosses a stage boundary (a Kafka value, a Redis value, an
MLflow artifact's JSON, a file another stage reads).

A contract is a frozen pydantic model with a `schema_version` and no unknown fields. The producer
builds it and writes `to_json()`; the consumer imports the same class and calls `parse(...)`,
which raises ContractError (one line, naming the record and the field) on a missing required
field, an unknown field, a wrong type or another schema version. Nothing is ever read as a silent
"none".
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from stages.common.errors import ContractError


class Contract(BaseModel):
    """Base class: subclasses set `RECORD` (a name for messages) and `SCHEMA_VERSION`, and
    declare `schema_version: Literal[N] = N` so that another version is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    RECORD: ClassVar[str] = "record"

    @classmethod
    def parse(cls, data: str | bytes | dict[str, Any]) -> Self:
        """The record from JSON text/bytes or a decoded dict; ContractError when it breaks the
        contract."""
        try:
            if isinstance(data, (str, bytes, bytearray)):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ContractError(f"{cls.RECORD}: {_first_problem(exc)}") from None

    def to_json(self) -> str:
        """Compact JSON with keys sorted (stable bytes for equal records)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict form (what `parse` takes back)."""
        return self.model_dump(mode="json")


def _first_problem(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(f"unknown field {where!r}")
        elif kind == "missing":
            problems.append(f"missing field {where!r}")
        elif kind == "literal_error" and where.endswith("schema_version"):
            problems.append(f"schema_version {err.get('input')!r} is not the one this build reads")
        else:
            problems.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
