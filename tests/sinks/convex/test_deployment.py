"""Which deployment and key the daemon uses: flags, then the environment, in the documented order."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from ingestor.sinks.convex.deployment import (
    DEFAULT_URL,
    DeploymentError,
    Secret,
    resolve_deployment,
    resolve_key,
    resolve_url,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (DEFAULT_URL, "default")),
        (
            {"VITE_CONVEX_URL": "https://dev-x.convex.cloud/"},
            ("https://dev-x.convex.cloud", "VITE_CONVEX_URL"),
        ),
        (
            {"CONVEX_URL": "https://a-b-1.convex.cloud", "CONVEX_DEPLOYMENT": "dev:other-name-2"},
            ("https://a-b-1.convex.cloud", "CONVEX_URL"),
        ),
        (
            {"CONVEX_DEPLOYMENT": "dev:happy-animal-123"},
            ("https://happy-animal-123.convex.cloud", "CONVEX_DEPLOYMENT"),
        ),
        (
            {"CONVEX_DEPLOYMENT": "prod:happy-animal-123"},
            ("https://happy-animal-123.convex.cloud", "CONVEX_DEPLOYMENT"),
        ),
        (
            {"CONVEX_DEPLOYMENT": "local:local-me-app", "CONVEX_SELF_HOSTED_URL": "http://convex:3210"},
            ("http://convex:3210", "CONVEX_SELF_HOSTED_URL"),
        ),
        (
            {"CONVEX_DEPLOYMENT": "anonymous:anonymous-app", "VITE_CONVEX_URL": "http://127.0.0.1:3999"},
            ("http://127.0.0.1:3999", "VITE_CONVEX_URL"),
        ),
        (
            {"CONVEX_SITE_ORIGIN": "https://happy-animal-123.convex.site", "VITE_CONVEX_URL": "http://x:1"},
            ("https://happy-animal-123.convex.cloud", "CONVEX_SITE_ORIGIN"),
        ),
        (
            {"CONVEX_SELF_HOSTED_URL": "http://convex:3210", "CONVEX_SITE_ORIGIN": "http://convex:3211"},
            ("http://convex:3210", "CONVEX_SELF_HOSTED_URL"),
        ),
        ({"CONVEX_URL": "  ", "VITE_CONVEX_URL": "http://v:1"}, ("http://v:1", "VITE_CONVEX_URL")),
    ],
)
def test_url_precedence(env: dict[str, str], expected: tuple[str, str]) -> None:
    assert resolve_url(env) == expected


def test_the_flag_beats_every_variable() -> None:
    env = {"CONVEX_URL": "https://a-b-1.convex.cloud", "CONVEX_DEPLOYMENT": "dev:c-d-2"}
    assert resolve_url(env, "http://127.0.0.1:9/") == ("http://127.0.0.1:9", "--convex-url")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONVEX_SITE_ORIGIN": "http://127.0.0.1:3211"}, "CONVEX_SELF_HOSTED_URL"),
        ({"CONVEX_DEPLOYMENT": "happy-animal-123"}, "deployment name"),
        ({"CONVEX_URL": "happy-animal-123.convex.cloud"}, "not an http"),
    ],
)
def test_unusable_values_are_refused_with_a_hint(env: dict[str, str], message: str) -> None:
    with pytest.raises(DeploymentError, match=message):
        resolve_url(env)


DEPLOY: Final = "prod:happy-animal-123|deploy-key-0123"
ADMIN: Final = "happy-animal-123|admin-key-0123456"
SELF_HOSTED: Final = "convex-self-hosted|0123456789abcdef"


def test_key_precedence(tmp_path: Path) -> None:
    env = {
        "CONVEX_DEPLOY_KEY": DEPLOY,
        "CONVEX_ADMIN_KEY": ADMIN,
        "CONVEX_SELF_HOSTED_ADMIN_KEY": SELF_HOSTED,
    }
    key, source = resolve_key(env)
    assert key is not None and key.reveal() == DEPLOY and source == "CONVEX_DEPLOY_KEY"
    key, source = resolve_key({"CONVEX_ADMIN_KEY": ADMIN, "CONVEX_SELF_HOSTED_ADMIN_KEY": SELF_HOSTED})
    assert key is not None and key.reveal() == ADMIN
    key, source = resolve_key({"CONVEX_SELF_HOSTED_ADMIN_KEY": SELF_HOSTED})
    assert key is not None and source == "CONVEX_SELF_HOSTED_ADMIN_KEY"
    key_file = tmp_path / "key"
    key_file.write_text(f"{ADMIN}-from-file\n")
    key, source = resolve_key(env, key_file)
    assert key is not None and key.reveal() == f"{ADMIN}-from-file" and source == "--convex-key-file"
    assert resolve_key({}) == (None, None)


def test_key_file_errors_do_not_show_the_key(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="cannot read"):
        resolve_key({}, tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(DeploymentError, match="empty"):
        resolve_key({}, tmp_path / "empty")
    # httpx would quote a key with a line break escaped (`\\n`), past the log scrubber, on every retry.
    (tmp_path / "two-lines").write_text(f"{ADMIN}\nsecond-line-of-the-key\n")
    with pytest.raises(DeploymentError, match="more than one line") as raised:
        resolve_key({}, tmp_path / "two-lines")
    assert ADMIN not in str(raised.value)
    with pytest.raises(DeploymentError, match="more than one line"):
        resolve_key({"CONVEX_ADMIN_KEY": f"{ADMIN}\nmore"})


@pytest.mark.parametrize("key", ["k", "admin", "fifteen-chars-x"])
def test_a_key_too_short_to_be_real_is_refused(key: str) -> None:
    # The README's stand-in example is `CONVEX_ADMIN_KEY=k`: masking every "k" would mangle the logs.
    with pytest.raises(DeploymentError, match="too short"):
        resolve_key({"CONVEX_ADMIN_KEY": key})


def test_secret_never_prints() -> None:
    deployment = resolve_deployment({"CONVEX_ADMIN_KEY": "s3cret|key-0123456789"})
    secret = Secret("s3cret|key-0123456789")
    for text in (repr(deployment), str(deployment), f"{deployment.key}", repr(secret)):
        assert "s3cret" not in text
