"""Settings shared by every stage, and the helper that gives each stage its env prefix.

Every value comes from the environment or a `.env` file in the working directory:
`FRESHREC_<FIELD>` for the shared settings below, `FRESHREC_<STAGE>_<FIELD>` for a stage's own
(see `settings_config`). Nothing is read at import time: call `load_settings(cls)` from an
entrypoint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stages.common.errors import ConfigError
from stages.common.schema import FeatureSchema, load_schema

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-_\[\]:]+:(\d{1,5})$")
# The embedded Redis's generated password: <state_dir>/services/redis/<this file> (mode 0600),
# written by `freshrec infra up` (infra.services.redis_server).
EMBEDDED_REDIS_PASSWORD_FILE = "password"


def settings_config(stage: str | None = None) -> SettingsConfigDict:
    """The pydantic-settings config for the shared settings (`stage=None`) or one stage's.

    `settings_config("features")` reads `FRESHREC_FEATURES_<FIELD>`.
    """
    prefix = "FRESHREC_" + (f"{stage.upper()}_" if stage else "")
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )


def _check_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{what} must look like {schemes[0]}://HOST:PORT, got {value!r}")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"{what} has a bad port: {value!r}") from exc
    return value


class CommonSettings(BaseSettings):
    """Where the services are, and where local state lives. Env prefix `FRESHREC_`."""

    model_config = settings_config()

    state_dir: Path = Field(
        Path(".freshrec"),
        description="Directory for local state: service data and logs, pid files, checkpoints.",
    )
    embed: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description="Services `freshrec infra up` starts itself even though their address is set "
        "(comma-separated: kafka,redis,mlflow,prefect), e.g. to run the embedded ones on other "
        "loopback ports.",
    )
    feature_schema: str = Field(
        "criteo",
        validation_alias=AliasChoices("FRESHREC_SCHEMA", "feature_schema"),
        description="The feature schema every stage reads events with: a bundled preset "
        "(criteo, ecommerce) or the path of a YAML file (see the README's 'Your own events').",
    )
    checkpoint_dir: Path | None = Field(
        None, description="Trainer checkpoints; default: <state_dir>/checkpoints."
    )

    # Kafka
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated HOST:PORT list of Kafka brokers (any Kafka-protocol broker).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol, passed to every client."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="Kafka sasl.mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="Kafka SASL password (secret).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for Kafka TLS.")
    topic_events: str = Field("freshrec.events", description="Topic of validated raw events.")
    topic_events_dlq: str = Field(
        "freshrec.events.dlq", description="Dead-letter topic: rows that failed validation."
    )
    topic_partitions: int = Field(
        4, ge=1, le=1024, description="Partition count used when freshrec creates a topic."
    )
    topic_replication: int = Field(
        1, ge=1, le=16, description="Replication factor used when freshrec creates a topic."
    )
    topic_retention_ms: int = Field(
        86_400_000,
        ge=-1,
        description="retention.ms of the topics freshrec creates (default 24 h; -1: forever). "
        "Applies when the topic is created; an existing topic keeps its own setting.",
    )
    topic_retention_bytes: int = Field(
        1 << 30,
        ge=-1,
        description="retention.bytes of the topics freshrec creates: bytes kept per partition "
        "(default 1 GiB; -1: no bound). Applies when the topic is created.",
    )

    # Redis
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL of the feature store; rediss:// for TLS.",
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Redis AUTH password (secret); overrides one in the URL. Unset, with no "
        "password in the URL, the embedded Redis's generated one is used "
        "(<state_dir>/services/redis/password).",
    )
    redis_namespace: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Key namespace in Redis, so that several pipelines can share one server.",
    )

    # MLflow
    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000", description="MLflow tracking server and model registry."
    )
    mlflow_token: SecretStr | None = Field(
        None, description="Bearer token for a remote MLflow server (secret)."
    )
    mlflow_experiment: str = Field("freshrec", description="MLflow experiment of trainer runs.")
    model_name: str = Field(
        "freshrec-ctr", description="Registered model name in the MLflow model registry."
    )

    # Prefect (the variable Prefect itself reads, so one setting serves both)
    prefect_api_url: str = Field(
        "http://127.0.0.1:4200/api",
        validation_alias=AliasChoices("PREFECT_API_URL", "FRESHREC_PREFECT_API_URL"),
        description="Prefect server API URL (the standard PREFECT_API_URL variable).",
    )

    @field_validator("embed", mode="before")
    @classmethod
    def _embed(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise ValueError("expected a comma-separated list of service names")
        names = frozenset(str(v) for v in value)
        unknown = names - {"kafka", "redis", "mlflow", "prefect"}
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}: use kafka, redis, mlflow, prefect")
        return names

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError("needs at least one HOST:PORT")
        for host in hosts:
            match = _HOST_PORT.match(host)
            if not match or not 0 < int(match.group(1)) < 65536:
                raise ValueError(f"{host!r} is not HOST:PORT")
        return ",".join(hosts)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        return _check_url(value, ("redis", "rediss", "unix"), "the Redis URL")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _mlflow(cls, value: str) -> str:
        if value.startswith(("file:", "sqlite:", "databricks")):
            return value
        return _check_url(value, ("http", "https"), "the MLflow tracking URI")

    @field_validator("prefect_api_url")
    @classmethod
    def _prefect(cls, value: str) -> str:
        return _check_url(value, ("http", "https"), "the Prefect API URL")

    def model_post_init(self, context: Any, /) -> None:
        """Give clients of the embedded Redis its generated password, when the user set none."""
        if self.redis_password is not None or urlsplit(self.redis_url).password is not None:
            return
        if self.is_explicit("redis_url") and "redis" not in self.embed:
            return  # the user's own Redis: its password is theirs to set
        password = self._embedded_redis_password()
        if password is not None:
            self.redis_password = SecretStr(password)
            self.model_fields_set.discard("redis_password")  # found, not set by the user

    def schema(self) -> FeatureSchema:  # type: ignore[override]  # pydantic v1 API, unused
        """The feature schema named by FRESHREC_SCHEMA, validated (SchemaError if not)."""
        return load_schema(self.feature_schema)

    def refreshed(self) -> CommonSettings:
        """These settings with the embedded Redis's password picked up again: for a process
        that loaded its settings before `infra up` generated the password."""
        copy = self.model_copy()
        copy.model_post_init(None)
        return copy

    def _embedded_redis_password(self) -> str | None:
        path = self.state_dir / "services" / "redis" / EMBEDDED_REDIS_PASSWORD_FILE
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the embedded Redis password {path}: {exc.strerror}; fix its "
                "permissions or set FRESHREC_REDIS_PASSWORD"
            ) from None

    @property
    def checkpoints(self) -> Path:
        """The trainer checkpoint directory (resolved default)."""
        return self.checkpoint_dir or self.state_dir / "checkpoints"

    def is_explicit(self, field: str) -> bool:
        """True when the user set `field` (env or .env): then freshrec uses, never starts, it."""
        return field in self.model_fields_set


def kafka_client_config(settings: CommonSettings) -> dict[str, Any]:
    """librdkafka (confluent-kafka) config with the bootstrap and security settings."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        conf["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        conf["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return conf


def aiokafka_client_kwargs(settings: CommonSettings) -> dict[str, Any]:
    """aiokafka (and Faust) keyword arguments for the same bootstrap and security settings."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        import ssl

        kwargs["ssl_context"] = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile))
    return kwargs


def redact_url(url: str) -> str:
    """`url` with any password replaced by '***', for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def without_credentials(url: str) -> str:
    """`url` without its user and password: the form for links people click (UI links in
    Prefect artifacts, the demo's summary)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


# scheme://user:password@ inside any text (an error message quoting a URL)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@:]*):[^\s/@]*@")


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it replaced by '***' (error messages of
    clients that quote the URL they were given)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from env/.env (plus `overrides`), or raise ConfigError in one line.

    The message names the environment variable to fix, e.g.
    "FRESHREC_REDIS_URL: the Redis URL must look like redis://HOST:PORT, got 'localhost'".
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            # An aliased field (PREFECT_API_URL) is reported under its alias, as given.
            var = f"{prefix}{field}".upper() if field in cls.model_fields else field.upper()
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{var}: {message}")
        raise ConfigError("; ".join(problems)) from None
