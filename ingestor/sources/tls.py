"""TLS for the TCP listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`), with the standard
library's `ssl`: the token in the hello line then travels encrypted, and with a client CA only
producers holding a certificate it issued can connect at all (mutual TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from anyio import aclose_forcefully, fail_after, get_cancelled_exc_class
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from ingestor.errors import SourceConfigError
from ingestor.logging import get_logger

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


async def handshake(stream: ByteStream, context: ssl.SSLContext) -> ByteStream | None:
    """The server side of a TLS handshake on an accepted connection (the listener accepts plain
    sockets, so its connection cap and accept back-off apply to TLS producers too); None when it
    fails: the connection is closed, and logged as one debug line (anyio's own TLS listener logs each
    with its traceback, and a port scan would flood the log)."""
    try:
        with fail_after(HANDSHAKE_TIMEOUT):
            return await TLSStream.wrap(
                stream, server_side=True, ssl_context=context, standard_compatible=False
            )
    except get_cancelled_exc_class():
        raise
    except Exception as error:  # any failure of a peer's handshake: ssl, a reset, the timeout
        await aclose_forcefully(stream)
        log.debug("tls handshake failed", error=str(error))
        return None
