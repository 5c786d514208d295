"""A small async client for the Convex HTTP API (`/api/mutation`, `/api/query`), and its errors.

Why not the `convex` package's clients: see docs/notes/convex.md (the WebSocket client holds
the GIL per round trip and may re-apply a resent mutation; the HTTP client has no keep-alive and no
timeout). Every failure is classified here, once, into what the caller should do about it:

- :class:`TransientError`: network errors, timeouts, 408, 429, 5xx. Retry with backoff.
- :class:`AuthError`: 401/403. Nothing in the request can fix it: alert, retry slowly.
- :class:`ConfigError`: the function does not exist (not deployed). Same handling as auth.
- :class:`RejectedError`: HTTP 400 or 200 `status:"error"`: the arguments were refused, nothing
  was applied. Retrying the same request is pointless; a smaller one may succeed.
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import httpx
import orjson

from ingestor.logging import scrub
from ingestor.sinks.convex.deployment import Secret

DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=10.0)
_MAX_ERROR_TEXT: Final = 500
_LIMITS: Final = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=60.0)
# A request (up to 8 MiB of ops) goes into the kernel in one or two writes rather than trickling out
# through the event loop 16 KiB at a time: every wait for the socket to drain costs a loop turn, and
# the loop is busy normalizing. The kernel caps this at net.core.wmem_max (and only ever uses what
# is queued).
_SEND_BUFFER: Final = 4 * 1024 * 1024
_SOCKET_OPTIONS: Final = [(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)]

ADMIN_IDENTITY: Final = {"issuer": "codex-ingestor:admin-key", "subject": "ingestor"}
"""Who the admin key acts as when calling public functions (`history:*`): a plain admin-key call has
no identity, which they refuse like an anonymous one; only the admin key can claim this issuer
(convex/lib/access.ts, docs/security.md)."""


def admin_authorization(key: str, acting_as: Mapping[str, str] | None = None) -> str:
    """The Authorization header of an admin-key call, acting as an identity if given (the real
    backend's `Convex <key>:<base64 identity JSON>`, as ConvexHttpClient's `setAdminAuth` sends it)."""
    if acting_as is None:
        return f"Convex {key}"
    return f"Convex {key}:{base64.b64encode(orjson.dumps(acting_as)).decode()}"


# What Convex answers when the function is missing (not deployed, or a typo in the path).
_MISSING_FUNCTION: Final = re.compile(r"could not find (?:public )?function|no (?:public )?function", re.I)


class ConvexError(Exception):
    """A failed Convex call. Messages never contain the key (see `ingestor.logging.scrub`)."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


class TransientError(ConvexError):
    def __init__(self, message: str, *, cause: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        """A short label for metrics: `network`, `timeout`, or the HTTP status."""
        self.retry_after = retry_after


class AuthError(ConvexError):
    pass


class ConfigError(ConvexError):
    pass


class RejectedError(ConvexError):
    pass


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: rare from Convex; the backoff schedule applies instead


def _error_text(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:_MAX_ERROR_TEXT]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("code", "message", "errorMessage") if body.get(k)]
        if parts:
            return ": ".join(parts)[:_MAX_ERROR_TEXT]
    return response.text[:_MAX_ERROR_TEXT]


def classify(response: httpx.Response) -> Any:
    """The function's return value for a successful response; raises the right error otherwise."""
    status = response.status_code
    if status == 200:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            # A proxy or a truncated body, not Convex's answer: the call may or may not have run.
            raise TransientError("unparseable 200 response", cause="bad_response") from None
        if isinstance(body, dict) and body.get("status") == "success":
            return body.get("value")
        if isinstance(body, dict) and body.get("status") == "error":
            message = str(body.get("errorMessage", ""))[:_MAX_ERROR_TEXT]
            if _MISSING_FUNCTION.search(message):
                raise ConfigError(message)
            raise RejectedError(message)
        raise TransientError("unexpected 200 response shape", cause="bad_response")
    text = f"HTTP {status}: {_error_text(response)}"
    if status in (401, 403):
        raise AuthError(text)
    if status == 404 or _MISSING_FUNCTION.search(text):
        raise ConfigError(text)
    if status in (408, 429) or status >= 500:
        raise TransientError(text, cause=str(status), retry_after=_retry_after(response))
    raise RejectedError(text)


def _envelope(path: str, args_json: bytes) -> bytes:
    """The request body around pre-encoded arguments (the sink never re-parses its spooled ops)."""
    return envelope(path, [args_json])


def envelope(path: str, args_parts: Sequence[bytes]) -> bytes:
    """The request body around arguments given as the pieces of their JSON (joined in one copy)."""
    return b"".join([b'{"path":', orjson.dumps(path), b',"format":"json","args":', *args_parts, b"}"])


class ConvexHttp:
    """Keep-alive HTTP/1.1 client for one deployment; `transport` lets tests mock the server."""

    def __init__(
        self,
        url: str,
        key: Secret | None,
        *,
        acting_as: Mapping[str, str] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = admin_authorization(key.reveal(), acting_as)
        self.url = url
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                # A plain-HTTP deployment (a local backend) never negotiates TLS (no redirects are
                # followed): skip loading the CA bundle, which costs ~40 ms of start-up.
                verify=not url.lower().startswith("http://"),
                limits=_LIMITS,
                socket_options=_SOCKET_OPTIONS,
            )
        self._client = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport)

    async def call_raw(self, kind: Literal["mutation", "query"], path: str, args_json: bytes) -> Any:
        return await self.call_body(kind, path, _envelope(path, args_json))

    async def call_body(self, kind: Literal["mutation", "query"], path: str, body: bytes) -> Any:
        """`call_raw` with the request body already built (`envelope`): retries send it as it is."""
        try:
            response = await self._client.post(f"/api/{kind}", content=body)
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"{kind} {path}: timed out ({type(exc).__name__})", cause="timeout"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(f"{kind} {path}: {type(exc).__name__}: {exc}", cause="network") from None
        # httpx links a response and its (read, closed) stream in a cycle, which would keep the
        # request, so the body (MiBs), alive until the next garbage collection: break it.
        response.stream = httpx.ByteStream(b"")
        return classify(response)

    async def query(self, path: str, args: dict[str, Any]) -> Any:
        return await self.call_raw("query", path, orjson.dumps(args))

    async def aclose(self) -> None:
        await self._client.aclose()
