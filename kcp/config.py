"""The configuration file: default broker, broker aliases and their properties.

Precedence, highest first: the command line, the environment (``KCP_BROKER``), the file
(``KCP_CONFIG`` or ``$XDG_CONFIG_HOME/kcp/config.toml``), built-in defaults.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, without_userinfo

DEFAULT_BROKER = "localhost:9092"
# Options whose default the config file's [defaults] table may change.
DEFAULTABLE = {"bytes", "json_style", "timeout", "on_error"}
SECRET_WORDS = ("password", "secret", "token", "credential", "key.pem", "keystore",
                "jaas.config", "oauthbearer.config")
# Keys that name where a secret is, not the secret itself, and the librdkafka property each
# fills in (a SASL password; an OIDC client secret, as GCN Kafka uses).
SECRET_REFERENCES = {"password_file": "sasl.password", "password_env": "sasl.password",
                     "client_secret_file": "sasl.oauthbearer.client.secret",
                     "client_secret_env": "sasl.oauthbearer.client.secret"}
# Keys of a broker profile that are kcp's own settings, not librdkafka properties.
KCP_SETTINGS = ("group_prefix", "registry")
# Values that are secrets whatever their key is called: private keys, key=value settings
# carrying a secret (sasl.oauthbearer.config's clientSecret=...).
SECRET_VALUE = re.compile(r"(?i)PRIVATE KEY|(password|secret|token|credential)\w*\s*[=:]")
_warned: set[str] = set()


def config_path() -> Path:
    """``KCP_CONFIG``, else config.toml in the user's config folder (platformdirs)."""
    explicit = os.environ.get("KCP_CONFIG")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_config_dir("kcp")) / "config.toml"


@dataclass
class BrokerProfile:
    """A broker as a client reaches it: librdkafka properties and kcp's own settings."""

    name: str
    properties: dict[str, str]
    # None: the default, the SASL user name and a dash (Rubin's ACLs let a user use only the
    # consumer groups named after it).
    explicit_group_prefix: str | None = None
    # A schema registry serving this broker's schema ids (Rubin).
    registry: str | None = None

    @property
    def group_prefix(self) -> str:
        if self.explicit_group_prefix is not None:
            return self.explicit_group_prefix
        user = self.properties.get("sasl.username")
        return f"{user}-" if user else ""

    def group_id(self, group: str) -> str:
        """``group`` as this broker knows it: prefixed, unless it is already."""
        prefix = self.group_prefix
        return group if group.startswith(prefix) else prefix + group


@dataclass
class Config:
    default_broker: str | None = None
    brokers: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None
    # [defaults]: default values of command-line options, e.g. bytes = "size"
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        path = path or config_path()
        if not path.is_file():
            if os.environ.get("KCP_CONFIG"):
                raise UsageError(f"KCP_CONFIG names {path}, which does not exist")
            return cls(path=path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise UsageError(f"{path}: not valid TOML: {exc or 'nested too deeply'}") from None
        default_broker = data.get("default_broker")
        if default_broker is not None and not isinstance(default_broker, str):
            raise UsageError(f"{path}: default_broker must be a string, e.g. \"host:9092\"")
        brokers = data.get("brokers", {})
        if not isinstance(brokers, dict) or not all(isinstance(e, dict) for e in brokers.values()):
            raise UsageError(f"{path}: [brokers] must be a table of broker aliases")
        if any(is_secret(key) and key not in SECRET_REFERENCES for entry in brokers.values()
               if isinstance(entry, dict) for key in entry):
            warn_if_readable_by_others(path, "holds a password")
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict) or not set(defaults) <= DEFAULTABLE:
            raise UsageError(f"{path}: [defaults] may set {', '.join(sorted(DEFAULTABLE))}")
        return cls(default_broker=default_broker, brokers=brokers, path=path,
                   defaults=defaults)

    def effective(self) -> dict[str, Any]:
        """The configuration in force, secrets masked: what ``kcp config show`` prints."""
        default = os.environ.get("KCP_BROKER") or self.default_broker or DEFAULT_BROKER
        source = ("KCP_BROKER" if os.environ.get("KCP_BROKER") else
                  "config file" if self.default_broker else "built-in default")
        return {
            "config_file": str(self.path) if self.path else None,
            "config_file_exists": bool(self.path and self.path.is_file()),
            "default_broker": default,
            "default_broker_from": source,
            "brokers": {name: {**masked({k: str(v) for k, v in entry.items()}),
                               "group_prefix": self._profile(name, entry, read_secrets=False)
                               .group_prefix}
                        for name, entry in self.brokers.items()},
            "defaults": self.defaults,
        }

    def broker(self, name: str | None) -> BrokerProfile:
        """The profile of an alias, of a host list, or of the default broker."""
        if name is None:
            name = os.environ.get("KCP_BROKER") or self.default_broker or DEFAULT_BROKER
        entry = self.brokers.get(name)
        if entry is None:
            return BrokerProfile(name, {"bootstrap.servers": name})
        return self._profile(name, entry)

    def _profile(self, name: str, entry: dict[str, Any], read_secrets: bool = True
                 ) -> BrokerProfile:
        properties: dict[str, str] = {}
        for key, value in entry.items():
            if key == "bootstrap":
                properties["bootstrap.servers"] = str(value)
            elif key in SECRET_REFERENCES:
                if read_secrets:
                    properties[SECRET_REFERENCES[key]] = _read_secret(key, str(value), name)
            elif key not in KCP_SETTINGS:
                properties[key] = str(value)
        if "bootstrap.servers" not in properties:
            raise UsageError(f"{self.path}: [brokers.{name}] needs bootstrap = \"host:port\"")
        prefix = entry.get("group_prefix")
        registry = entry.get("registry")
        return BrokerProfile(name, properties,
                             explicit_group_prefix=None if prefix is None else str(prefix),
                             registry=None if registry is None else str(registry))


def _read_secret(key: str, value: str, broker: str) -> str:
    """The secret a ``*_file`` or ``*_env`` key of a broker profile points at."""
    if key.endswith("_env"):
        if value not in os.environ:
            raise UsageError(f"broker {broker}: environment variable {value} is not set")
        return os.environ[value]
    path = Path(value).expanduser()
    warn_if_readable_by_others(path, "holds a password" if key.startswith("password")
                               else "holds a secret")
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"broker {broker}: cannot read {key} {path}: "
                         f"{exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"broker {broker}: {key} {path} is not UTF-8 text") from None


def warn_if_readable_by_others(path: Path, what: str) -> None:
    """One line on stderr (once per file) when a file holding a secret is readable by its
    group or by everyone, as ssh does for keys. The secret itself is never shown."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not mode & (stat.S_IRGRP | stat.S_IROTH) or str(path) in _warned:
        return
    _warned.add(str(path))
    shown = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and shown.startswith(home + os.sep):
        shown = "~" + shown[len(home):]
    sys.stderr.write(f"kcp: warning: {shown} {what} and is readable by others "
                     f"(chmod 600 it)\n")


def is_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def masked(properties: dict[str, str]) -> dict[str, str]:
    """``properties`` safe to print: every secret replaced by asterisks, by its key's name or
    by what its value looks like, and URLs without their user:password@."""
    return {k: ("****" if is_secret(k) or SECRET_VALUE.search(v) else without_userinfo(v))
            for k, v in properties.items()}
