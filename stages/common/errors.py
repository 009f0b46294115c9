"""One root error type, one subclass per stage. Messages say what to do next."""

from __future__ import annotations


class FreshrecError(Exception):
    """Root of every error freshrec raises on purpose.

    The message is meant for a person: it names what went wrong and what to do about it
    ("start Redis or set FRESHREC_REDIS_URL"), on one line.
    """


class ConfigError(FreshrecError):
    """A setting is missing or malformed."""


class ServiceUnavailable(FreshrecError):
    """A service (Kafka, Redis, MLflow, Prefect) could not be reached."""


class ContractError(FreshrecError):
    """A record does not match its contract (bad bytes, wrong version, unknown fields)."""


class InfraError(FreshrecError):
    """The embedded services could not be started, stopped or checked."""


class IngestError(FreshrecError):
    """The ingest stage failed (not a bad row: those go to the dead-letter topic)."""


class FeaturesError(FreshrecError):
    """The features stage failed."""


class TrainError(FreshrecError):
    """The train stage failed."""


class PublishError(FreshrecError):
    """The publish stage or serving failed."""


class MissingDependency(FreshrecError):
    """An optional dependency of one stage is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'freshrec[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str) -> object:
    """Import `module` or raise MissingDependency with the install hint for `extra`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module.split(".")[0], extra) from exc
