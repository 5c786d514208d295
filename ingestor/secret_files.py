"""Reading a secret (the Convex key, the producers' token) from a file, refusing files that would
make it leak or be misread.

A value with a line break inside is refused: written into an HTTP header or compared with what a
producer sends, it would never match, and error messages quote it escaped (`\\n`), which the log
scrubber cannot recognise. One trailing newline (as `echo` and editors leave) is not part of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretFileError(ValueError):
    """The file cannot be used; the message names the file and the flag, never the content."""


def _readable_by_others(info: os.stat_result) -> bool:
    """Readable by anyone but the owner and the groups this process belongs to (Kubernetes mounts a
    Secret group-readable for the Pod's fsGroup, which is the process's own group)."""
    if info.st_mode & stat.S_IROTH:
        return True
    own_groups = {os.getgid(), *os.getgroups()}
    return bool(info.st_mode & stat.S_IRGRP) and info.st_gid not in own_groups


def read_secret_file(path: Path, flag: str, *, private: bool = False) -> str:
    """The file's content without its trailing newline. With `private`, a file others may read is
    refused too."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretFileError(f"cannot read {flag} {str(path)!r}: {reason}") from None
    if private and _readable_by_others(info):
        raise SecretFileError(
            f"{flag} {str(path)!r} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it"
        )
    value = text.removesuffix("\n").removesuffix("\r")
    if "\n" in value or "\r" in value:
        raise SecretFileError(f"{flag} {str(path)!r} holds more than one line")
    if not value:
        raise SecretFileError(f"{flag} {str(path)!r} is empty")
    return value
