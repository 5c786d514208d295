"""TLS for the TCP listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`), with the standard
library's `ssl`: the token in the hello line then travels encrypted, and with a client CA only
producers holding a certificate it issued can connect at all (mutual TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from anyio import aclose_forcefully, get_cancelled_exc_class
from anyio.abc import AnyByteStream
from anyio.streams.tls import TLSListener

from ingestor.logging import get_logger
from ingestor.sources import SourceConfigError

HANDSHAKE_TIMEOUT: Final = 10.0

log = get_logger("ingestor.sources")


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later with the certificate chain in `cert`; with `client_ca`, a client certificate
    it issued is required. SourceConfigError when a file cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise SourceConfigError(f"--tls-cert/--tls-key/--tls-client-ca: {error}") from None
    return context


class QuietTLSListener(TLSListener):
    """anyio logs every failed handshake with its traceback (a port scan would flood the log): here
    each is one debug line; the connection is closed all the same."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: AnyByteStream) -> None:
        await aclose_forcefully(stream)
        if not isinstance(exc, Exception) or isinstance(exc, get_cancelled_exc_class()):
            raise exc
        log.debug("tls handshake failed", error=str(exc))
