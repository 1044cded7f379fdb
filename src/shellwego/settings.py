"""The one typed settings object, built at the entry point and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from shellwego.errors import ConfigError
from shellwego.models.units import parse_duration
from shellwego.runtime.network.config import NetworkSettings


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "/root")) / ".local" / "share")
    return Path(base) / "shellwego"


def parse_artifact_store(raw: str | None) -> str | None:
    """``SHELLWEGO_ARTIFACT_STORE``: empty or ``local`` (the data directory), or
    ``s3://bucket[/prefix]``."""
    value = (raw or "").strip()
    if value in ("", "local"):
        return None
    bucket = value.removeprefix("s3://").split("/", 1)[0]
    bucket_name = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
    if not value.startswith("s3://") or not bucket_name.fullmatch(bucket):
        raise ConfigError(
            f"SHELLWEGO_ARTIFACT_STORE must be 'local' or s3://bucket/prefix, got {value[:200]!r}"
        )
    return value.rstrip("/")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    api_host: str = "127.0.0.1"
    api_port: int = 8400
    public_url: str | None = None  # how agents and the CLI reach the API
    # where users reach apps through the edges, "{app}" standing for the app's name, e.g.
    # https://{app}.apps.example.com/ (a replica without an edge cannot know the edges'
    # port); None: http://{app}.<base domain>[:<http port>]/
    apps_url: str | None = None
    base_domain: str = "localhost"
    http_port: int = 8080
    https_port: int = 8443
    nats_url: str | None = None
    master_key: str | None = None  # base64; otherwise a key file under data_dir
    master_key_file: Path | None = None
    # older master keys (base64) that still unwrap until `shellwego keys rotate` re-wraps
    master_keys_old: tuple[str, ...] = ()
    production: bool = False
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024
    log_retention_lines: int = 5000
    node_down_after_seconds: float = 15.0
    heartbeat_interval: float = 5.0
    # a blocking query (an agent's assignments, an edge's route table) re-reads the database
    # at least this often even without a wake-up: a lost bus message costs this much latency
    blocking_recheck: float = 5.0
    drain_seconds: float = 2.0
    instance_ports: tuple[int, int] = (20000, 29999)  # ports instances listen on, per node
    # uids (each also the gid) handed out one per app, never reused: its instances, one-off
    # commands and build steps run as it when ShellWeGo runs as root
    app_uids: tuple[int, int] = (1000000, 1999999)
    # per instance and per build step: processes (pids cgroup) and open files (RLIMIT_NOFILE)
    pids_limit: int = 512
    nofile_limit: int = 10240
    # failed password checks a source address may make before it waits (twice as many per
    # account); each further failure doubles the wait (services/throttle.py)
    login_free_failures: int = 5
    # "namespace": each instance, one-off command and build step in a network namespace of
    # its own (root only; otherwise they share the host's); "host": always the host's
    instance_network: str = "namespace"
    network: NetworkSettings = field(default_factory=NetworkSettings)
    cpu_overcommit: float = 4.0  # the all-in-one's local node offers this many times its CPUs
    join_token: str | None = None
    # POST /v1/bootstrap without a join token: the all-in-one's (one process, one SQLite
    # file); `shellwego server` turns it off (see services/auth.bootstrap)
    open_bootstrap: bool = True
    acme_email: str | None = None
    acme_ca: str | None = None
    acme_staging: bool = False
    dns_resolver: str | None = None  # "host[:port]" for domain verification; None = system's
    # seconds an unverified custom domain holds its hostname; then anyone may add it
    domain_pending_ttl: float = 7 * 24 * 3600.0
    # where slugs and git repositories are kept: None, the data directory (one control
    # plane); "s3://bucket/prefix", a bucket every replica of a cluster reaches, at
    # s3_endpoint (None: AWS's) in s3_region. Credentials: AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY from the environment, never kept here
    artifact_store: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def apps_url_template(self) -> str:
        """Where an app answers, ``{app}`` standing for its name."""
        if self.apps_url:
            return self.apps_url
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{{app}}.{self.base_domain}{port}/"

    def app_url(self, app_name: str) -> str:
        return self.apps_url_template.replace("{app}", app_name)

    @property
    def key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def check(self) -> None:
        """Refuse unsafe configurations."""
        if self.production and not (self.master_key or self.master_key_file):
            raise ConfigError(
                "production mode needs SHELLWEGO_MASTER_KEY or SHELLWEGO_MASTER_KEY_FILE "
                "(an explicit master key)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(
            str(
                overrides.pop("data_dir", None)
                or env.get("SHELLWEGO_DATA_DIR")
                or default_data_dir(env)
            )
        )
        url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'shellwego.db'}"

        def num(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

        def ratio(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if not 0.1 <= value <= 100:
                raise ConfigError(f"{name} must be between 0.1 and 100, got {value:g}")
            return value

        def port_range(name: str, default: tuple[int, int]) -> tuple[int, int]:
            raw = env.get(name)
            if raw is None:
                return default
            low, sep, high = raw.partition("-")
            try:
                first, last = int(low), int(high)
            except ValueError:
                first, last = 0, -1
            if not sep or not 1024 <= first <= last <= 65535:
                raise ConfigError(f"{name} must look like 20000-29999, got {raw!r}")
            return first, last

        def uid_range(name: str, default: tuple[int, int]) -> tuple[int, int]:
            raw = env.get(name)
            if raw is None:
                return default
            low, sep, high = raw.strip().partition("-")
            try:
                first, last = int(low), int(high)
            except ValueError:
                first, last = 0, -1
            # above the system's and login users' ids (below 65536), under 2^31 - 1
            if not sep or not 65536 <= first <= last < 2**31 - 1:
                raise ConfigError(
                    f"{name} must be a range of uids above 65535 like 1000000-1999999, got {raw!r}"
                )
            return first, last

        def choice(name: str, allowed: tuple[str, ...]) -> str:
            value = env.get(name, allowed[0]).strip().lower()
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
            return value

        def limit(name: str, default: int, low: int, high: int) -> int:
            value = num(name, default)
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
            return value

        def duration(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                return float(parse_duration(raw))
            except ValueError:
                raise ConfigError(
                    f"{name} must be a duration such as 7d, 12h, 90m or 3600 (seconds), got {raw!r}"
                ) from None

        def apps_url(name: str) -> str | None:
            raw = (env.get(name) or "").strip()
            if not raw:
                return None
            if not raw.startswith(("http://", "https://")) or "{app}" not in raw:
                raise ConfigError(
                    f"{name} must be an http(s) URL with {{app}} where the app's name goes, "
                    f"like https://{{app}}.apps.example.com/, got {raw!r}"
                )
            return raw

        key_file = env.get("SHELLWEGO_MASTER_KEY_FILE")
        old_keys = tuple(
            k.strip() for k in env.get("SHELLWEGO_MASTER_KEY_OLD", "").split(",") if k.strip()
        )
        settings = cls(
            data_dir=data_dir,
            database_url=url,
            api_host=env.get("SHELLWEGO_API_HOST", "127.0.0.1"),
            api_port=num("SHELLWEGO_API_PORT", 8400),
            public_url=env.get("SHELLWEGO_PUBLIC_URL"),
            apps_url=apps_url("SHELLWEGO_APPS_URL"),
            base_domain=env.get("SHELLWEGO_BASE_DOMAIN", "localhost"),
            http_port=num("SHELLWEGO_HTTP_PORT", 80 if os.geteuid() == 0 else 8080),
            https_port=num("SHELLWEGO_HTTPS_PORT", 443 if os.geteuid() == 0 else 8443),
            nats_url=env.get("NATS_URL"),
            master_key=env.get("SHELLWEGO_MASTER_KEY"),
            master_key_file=Path(key_file) if key_file else None,
            master_keys_old=old_keys,
            production=env.get("SHELLWEGO_ENV", "").lower() == "production",
            join_token=env.get("SHELLWEGO_JOIN_TOKEN"),
            acme_email=env.get("SHELLWEGO_ACME_EMAIL"),
            acme_ca=env.get("SHELLWEGO_ACME_CA"),
            acme_staging=env.get("SHELLWEGO_ACME_STAGING", "") in ("1", "true", "yes"),
            dns_resolver=env.get("SHELLWEGO_DNS_RESOLVER") or None,
            cpu_overcommit=ratio("SHELLWEGO_CPU_OVERCOMMIT", 4.0),
            instance_ports=port_range("SHELLWEGO_INSTANCE_PORTS", (20000, 29999)),
            app_uids=uid_range("SHELLWEGO_APP_UIDS", (1000000, 1999999)),
            instance_network=choice("SHELLWEGO_INSTANCE_NETWORK", ("namespace", "host")),
            network=NetworkSettings.parse(
                pool=env.get("SHELLWEGO_NETWORK_POOL"),
                prefix=num("SHELLWEGO_NETWORK_PREFIX", 24),
                dns_servers=env.get("SHELLWEGO_DNS_SERVERS"),
                dns_forwarder=env.get("SHELLWEGO_DNS_FORWARDER", "") in ("1", "true", "yes"),
                dns_upstreams=env.get("SHELLWEGO_DNS_UPSTREAMS"),
            ),
            pids_limit=limit("SHELLWEGO_PIDS_LIMIT", 512, 16, 4194304),
            nofile_limit=limit("SHELLWEGO_NOFILE_LIMIT", 10240, 64, 1048576),
            login_free_failures=limit("SHELLWEGO_LOGIN_FREE_FAILURES", 5, 1, 1000000),
            domain_pending_ttl=duration("SHELLWEGO_DOMAIN_PENDING_TTL", 7 * 24 * 3600.0),
            artifact_store=parse_artifact_store(env.get("SHELLWEGO_ARTIFACT_STORE")),
            s3_endpoint=env.get("SHELLWEGO_S3_ENDPOINT") or None,
            s3_region=env.get("SHELLWEGO_S3_REGION") or env.get("AWS_REGION") or None,
            blocking_recheck=duration("SHELLWEGO_BLOCKING_RECHECK", 5.0),
        )
        return settings.with_overrides(**overrides)
