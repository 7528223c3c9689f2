"""No token or key in a log line.

:func:`install` puts a :class:`RedactFilter` on the loggers and handlers a
service writes through (its own, uvicorn's, websockets', the root handlers).
The filter rewrites each record's final message: the configured secrets
(``FASTAGENT_VAIC_TOKEN``, ``OPENAI_API_KEY``, ``FASTAGENT_READ_TOKEN``'s tokens,
``FASTAGENT_MASTER_KEY``) wherever they appear, and anything
shaped like a credential: ``Bearer …``, ``token=…`` / ``key=…`` / ``secret=…`` in
a query string (uvicorn logs the request path with its query), ``sk-…`` keys.

It also drops uvicorn's and websockets' own lines for a refused WebSocket
upgrade (``"WebSocket /audiocodes" 401``, ``connection rejected (401
Unauthorized)``): the service logs refusals itself, at most once per source per
minute (see ``Service.rejected``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[redacted]"
_SHAPES = re.compile(
    r"(Bearer\s+)[^\s\"',;]+"
    r"|((?:access_|api_|auth_)?(?:token|key|secret|password)=)[^\s&\"']+"
    r"|\bsk-[A-Za-z0-9_\-]{8,}"
)
_REFUSED = '%s - "WebSocket %s" %d'  # uvicorn's line
_REFUSALS = (_REFUSED, "connection rejected (%d %s)")  # ... and websockets' (sans-I/O)
_CODES = (401, 403, 503)


def _refused_code(args: object) -> object:
    """The HTTP status in the arguments of a refusal line (last for uvicorn's,
    first for websockets')."""
    if not isinstance(args, tuple) or not args:
        return None
    return args[0] if isinstance(args[0], int) else args[-1]


LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "websockets",
    "websockets.server",
    "websockets.client",
    "fastagent",
    "fastagent.service",
    "fastagent.sockets",
    "fastagent.tools",
    "fastagent.store",
    "openai",
    "httpx",
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret and credential-shaped substring masked."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return _SHAPES.sub(lambda m: (m.group(1) or m.group(2) or "") + MASK, text)


class RedactFilter(logging.Filter):
    """Masks credentials in a record's message (and its exception text)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s and len(s) >= 8}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _REFUSALS and record.args and _refused_code(record.args) in _CODES:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
        return True


_installed: RedactFilter | None = None


def install(secrets: Iterable[str | None] = ()) -> RedactFilter:
    """Install (once per process; later calls add secrets) the redacting filter."""
    global _installed
    if _installed is None:
        _installed = RedactFilter()
    _installed.secrets |= {s for s in secrets if s and len(s) >= 8}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for target in targets:
            if _installed not in target.filters:
                target.addFilter(_installed)
    return _installed
