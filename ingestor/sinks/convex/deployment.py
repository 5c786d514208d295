"""Which Convex deployment to write to, and with which key: flags first, then the environment.

The precedence (documented in docs/sidecar.md) follows the order the persistence spec lists the
variables in. Every step says where its answer came from, so the daemon can log its choice; the key
itself is only ever held in a :class:`Secret`, whose repr and str never show it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ingestor.logging import MIN_SECRET_LENGTH
from ingestor.secret_files import SecretFileError, read_secret_file

DEFAULT_URL: Final = "http://127.0.0.1:3210"

# `dev:happy-animal-123`, `prod:…`, `preview:…`: the name maps to `https://<name>.convex.cloud`.
# `local:` / `anonymous:` deployments run on this machine at a port only the Convex CLI knows (it also
# writes CONVEX_URL next to them), so they do not name a URL by themselves.
_CLOUD_DEPLOYMENT: Final = re.compile(r"^(?:dev|prod|preview):(?P<name>[a-z0-9]+(?:-[a-z0-9]+)*)$")
_LOCAL_DEPLOYMENT: Final = re.compile(r"^(?:local|anonymous):")

URL_VARIABLES: Final = (
    "CONVEX_URL",
    "CONVEX_DEPLOYMENT",
    "CONVEX_SELF_HOSTED_URL",
    "CONVEX_SITE_ORIGIN",
    "VITE_CONVEX_URL",
)
KEY_VARIABLES: Final = ("CONVEX_DEPLOY_KEY", "CONVEX_ADMIN_KEY", "CONVEX_SELF_HOSTED_ADMIN_KEY")


class DeploymentError(ValueError):
    """The configuration names no usable deployment (a message for the operator, never a key)."""


class Secret:
    """A credential that cannot leak through repr(), str() or f-strings by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Deployment:
    url: str
    """Base URL serving `/api/mutation` and `/api/query`, without a trailing slash."""
    url_source: str
    """Where the URL came from (`--convex-url`, an environment variable, or `default`)."""
    key: Secret | None
    key_source: str | None


def _normalize_url(url: str, source: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DeploymentError(f"{source}={url!r} is not an http(s) URL")
    return url.strip().rstrip("/")


def _url_from_deployment_name(value: str) -> str | None:
    match = _CLOUD_DEPLOYMENT.match(value.strip())
    if match:
        # Right for the default region only; EU deployments live at `<name>.eu-west-1.convex.cloud`,
        # which the name does not say: those set CONVEX_URL (the Convex CLI writes it to .env.local).
        return f"https://{match['name']}.convex.cloud"
    if _LOCAL_DEPLOYMENT.match(value.strip()):
        return None
    raise DeploymentError(
        f"CONVEX_DEPLOYMENT={value!r} is not a deployment name like `dev:happy-animal-123`; "
        "set CONVEX_URL instead"
    )


def _url_from_site_origin(origin: str) -> str:
    """The `.convex.site` origin serves HTTP actions only; the API lives on the `.convex.cloud` host.

    A self-hosted backend serves HTTP actions on a different port (3211) from its API (3210), and
    nothing in the origin says which: refuse rather than guess.
    """
    parts = urlsplit(origin.strip())
    host = parts.hostname or ""
    if parts.scheme == "https" and host.endswith(".convex.site") and parts.port is None:
        return f"https://{host.removesuffix('.convex.site')}.convex.cloud"
    raise DeploymentError(
        f"CONVEX_SITE_ORIGIN={origin!r} serves HTTP actions, not the /api endpoints the daemon calls; "
        "for a self-hosted backend set CONVEX_SELF_HOSTED_URL (usually port 3210) or CONVEX_URL"
    )


def resolve_url(env: Mapping[str, str], flag: str | None = None) -> tuple[str, str]:
    """The deployment URL and where it came from: `--convex-url`, then URL_VARIABLES in order."""
    if flag:
        return _normalize_url(flag, "--convex-url"), "--convex-url"
    for name in URL_VARIABLES:
        value = env.get(name, "").strip()
        if not value:
            continue
        if name == "CONVEX_DEPLOYMENT":
            url = _url_from_deployment_name(value)
            if url is None:
                continue
            return url, name
        if name == "CONVEX_SITE_ORIGIN":
            return _url_from_site_origin(value), name
        return _normalize_url(value, name), name
    return DEFAULT_URL, "default"


def resolve_key(env: Mapping[str, str], key_file: Path | None = None) -> tuple[Secret | None, str | None]:
    """The admin or deploy key and where it came from: `--convex-key-file`, then KEY_VARIABLES."""
    found: tuple[str, str] | None = None
    if key_file is not None:
        try:
            found = read_secret_file(key_file, "--convex-key-file").strip(), "--convex-key-file"
        except SecretFileError as exc:
            raise DeploymentError(str(exc)) from None
    else:
        found = next(((env[n].strip(), n) for n in KEY_VARIABLES if env.get(n, "").strip()), None)
    if found is None:
        return None, None
    value, source = found
    if "\n" in value or "\r" in value:
        raise DeploymentError(f"the key from {source} holds more than one line")
    if len(value) < MIN_SECRET_LENGTH:
        # Real keys are far longer; a short one is a mistake, and could not be masked in logs.
        raise DeploymentError(f"the key from {source} is too short to be a Convex key")
    return Secret(value), source


def resolve_deployment(
    env: Mapping[str, str], *, url_flag: str | None = None, key_file: Path | None = None
) -> Deployment:
    url, url_source = resolve_url(env, url_flag)
    key, key_source = resolve_key(env, key_file)
    return Deployment(url=url, url_source=url_source, key=key, key_source=key_source)


# -- command-line options of the Convex sink (stdlib only: the CLI imports this eagerly) -----------

_SIZE_SUFFIXES: Final = {
    "": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
}
_SIZE: Final = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.I)


def parse_size(text: str) -> int:
    """`4194304`, `4MiB`, `512k`, `1G`: binary multiples."""
    match = _SIZE.match(text)
    if not match or match[2].lower() not in _SIZE_SUFFIXES or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size like 4MiB or 1048576, got {text!r}")
    return int(match[1]) * _SIZE_SUFFIXES[match[2].lower()]


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds >= 0")
    return value


@dataclass(frozen=True, slots=True)
class ConvexOptions:
    """The Convex sink's command-line options, as the CLI parsed them; None: not given (the
    default applies: the environment's deployment and key, `ConvexSinkConfig`'s settings)."""

    url: str | None = None
    key_file: Path | None = None
    state_dir: Path | None = None
    batch_max_ops: int | None = None
    batch_max_bytes: int | None = None
    batch_max_age: float | None = None
    """Seconds."""
    spool_max_bytes: int | None = None
    flush_timeout: float | None = None
    unready_after: float | None = None


def add_convex_arguments(parser: argparse.ArgumentParser, *, delivery: bool) -> None:
    """`--convex-url` and `--convex-key-file`; with `delivery`, the spool and flush options too."""
    group = parser.add_argument_group("convex sink")
    group.add_argument(
        "--convex-url",
        metavar="URL",
        help="deployment URL; overrides " + ", ".join(URL_VARIABLES) + f" (default {DEFAULT_URL})",
    )
    group.add_argument(
        "--convex-key-file",
        type=Path,
        metavar="PATH",
        help="file holding the deploy or admin key; overrides " + ", ".join(KEY_VARIABLES),
    )
    if not delivery:
        return
    group.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="spool and dead-letter file (default: per user, $XDG_STATE_HOME/codex-ingestor, i.e. "
        "~/.local/state/codex-ingestor on Linux)",
    )
    group.add_argument(
        "--batch-max-bytes",
        type=parse_size,
        default=4 * 1024**2,
        metavar="SIZE",
        help="send a Convex request at this many encoded bytes (default: 4MiB, at most 8MiB)",
    )
    group.add_argument(
        "--spool-max-bytes",
        type=parse_size,
        default=1024**3,
        metavar="SIZE",
        help="when the spool holds this much, input pauses until Convex catches up (default: 1GiB)",
    )
    group.add_argument(
        "--flush-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="on shutdown, deliver for at most this long; the rest stays spooled (default: 10)",
    )
    group.add_argument(
        "--unready-after",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="/readyz answers 503 once deliveries have failed for this long; ready again after a "
        "success (default: 5)",
    )
