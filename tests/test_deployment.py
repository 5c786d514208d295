"""Which deployment and key the daemon uses: flags, then the environment, in the documented order."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestor.deployment import (
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


def test_key_precedence(tmp_path: Path) -> None:
    env = {"CONVEX_DEPLOY_KEY": "deploy", "CONVEX_ADMIN_KEY": "admin", "CONVEX_SELF_HOSTED_ADMIN_KEY": "self"}
    key, source = resolve_key(env)
    assert key is not None and key.reveal() == "deploy" and source == "CONVEX_DEPLOY_KEY"
    key, source = resolve_key({"CONVEX_ADMIN_KEY": "admin", "CONVEX_SELF_HOSTED_ADMIN_KEY": "self"})
    assert key is not None and key.reveal() == "admin"
    key, source = resolve_key({"CONVEX_SELF_HOSTED_ADMIN_KEY": "self"})
    assert key is not None and source == "CONVEX_SELF_HOSTED_ADMIN_KEY"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    key, source = resolve_key(env, key_file)
    assert key is not None and key.reveal() == "from-file" and source == "--convex-key-file"
    assert resolve_key({}) == (None, None)


def test_key_file_errors_do_not_show_the_key(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="cannot read"):
        resolve_key({}, tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(DeploymentError, match="empty"):
        resolve_key({}, tmp_path / "empty")


def test_secret_never_prints() -> None:
    deployment = resolve_deployment({"CONVEX_ADMIN_KEY": "s3cret|key"})
    for text in (repr(deployment), str(deployment), f"{deployment.key}", repr(Secret("s3cret|key"))):
        assert "s3cret" not in text
