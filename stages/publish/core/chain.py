"""The chain file of a registry version: what plain MLflow needs to rebuild its full model.

Every version registered since format 1 is an MLflow pyfunc model carrying the artifact
`chain` (`chain.json`). A full version's chain is empty; a delta version's chain names, oldest
first, the versions it applies onto: the last full version, then every delta after it up to
and including its base. Each link gives the registry version, the artifact URI of the version
(`runs:/<run>/publish/<seq:08d>`), where its export lies inside it (`export_path`) and the
sha256 of the export's manifest (the version tag `freshrec.manifest_sha256`), so a loader can
download exactly the exports and verify them (the manifest holds every array's sha256).

`registry_uri` is the tracking/registry URI the publisher used, without credentials; a loader
prefers MLFLOW_TRACKING_URI when that is set (the same server may have another address where
the model is loaded). The file is immutable once the version exists. Pure: no MLflow here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stages.common.errors import ContractError
from stages.publish.core.plan import Kind, VersionInfo

CHAIN_FORMAT_VERSION = 1
CHAIN_FILE = "chain.json"
# Where a version's export lies inside its artifact directory, by kind. A full version is a
# pyfunc model whose artifact `export` is the export; a delta version keeps its (small) export
# beside the pyfunc files, where serving and older releases read it.
EXPORT_PATHS: dict[str, str] = {"full": "artifacts/export", "delta": "export"}
_LINK_KEYS = frozenset(("version", "kind", "publish_seq", "source", "export_path",
                        "manifest_sha256"))
_CHAIN_KEYS = frozenset(("format_version", "model_name", "registry_uri", "kind", "publish_seq",
                         "manifest_sha256", "links"))


@dataclass(frozen=True)
class ChainLink:
    """One version a delta needs: registry version, kind, publish seq, artifact URI of the
    version directory, the export's path inside it, and the manifest's sha256."""

    version: int
    kind: Kind
    publish_seq: int
    source: str
    export_path: str
    manifest_sha256: str

    @property
    def export_uri(self) -> str:
        """The artifact URI of the export directory alone (what a loader downloads)."""
        return f"{self.source.rstrip('/')}/{self.export_path}"


@dataclass(frozen=True)
class VersionChain:
    """The chain file of one version (see the module docstring). `links` is empty for a full
    version and starts with a full version otherwise; publish seqs increase by one along it,
    ending just before this version's `publish_seq`."""

    model_name: str
    registry_uri: str
    kind: Kind
    publish_seq: int
    manifest_sha256: str
    links: tuple[ChainLink, ...]

    def __post_init__(self) -> None:
        if (self.kind == "full") != (not self.links):
            raise ContractError(f"chain of {self.kind} version seq {self.publish_seq}: "
                                f"{len(self.links)} links (a full version has none, a delta some)")
        if self.links and self.links[0].kind != "full":
            raise ContractError(f"chain of seq {self.publish_seq} does not start at a full version")
        if any(link.kind != "delta" for link in self.links[1:]):
            raise ContractError(f"chain of seq {self.publish_seq} has a full version inside")
        seqs = [link.publish_seq for link in self.links] + [self.publish_seq]
        if any(b != a + 1 for a, b in zip(seqs, seqs[1:])):
            raise ContractError(f"chain of seq {self.publish_seq} skips a version: {seqs}")

    def to_json(self) -> str:
        body = {**asdict(self), "format_version": CHAIN_FORMAT_VERSION,
                "links": [asdict(link) for link in self.links]}
        return json.dumps(body, indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> VersionChain:
        """Parse a chain file; ContractError when malformed, of another format version, or with
        unknown keys."""
        try:
            body: Any = json.loads(text)
            if not isinstance(body, dict) or body.get("format_version") != CHAIN_FORMAT_VERSION:
                raise ContractError(f"chain file format {body.get('format_version')!r}; this "
                                    f"build reads {CHAIN_FORMAT_VERSION}")
            unknown = set(body) - _CHAIN_KEYS
            unknown |= {k for link in body["links"] for k in set(link) - _LINK_KEYS}
            if unknown:
                raise ContractError(f"chain file has unknown keys {sorted(unknown)}")
            links = tuple(ChainLink(**link) for link in body["links"])
            fields = {k: body[k] for k in _CHAIN_KEYS - {"format_version", "links"}}
            return VersionChain(**fields, links=links)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ContractError(f"malformed chain file: {exc!r}") from None


def link_of(info: VersionInfo, source: str) -> ChainLink:
    """The chain link of a registered version (its tags parsed, its artifact URI)."""
    return ChainLink(info.version, info.kind, info.publish_seq, source,
                     EXPORT_PATHS[info.kind], info.manifest_sha256)


def public_uri(uri: str) -> str:
    """`uri` without user:password@ (a chain file is an artifact anyone reading the model sees)."""
    parts = urlsplit(uri)
    if parts.netloc and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urlunsplit(parts)
