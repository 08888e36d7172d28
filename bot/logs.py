"""Keep secrets out of the logs: the bot token, interaction tokens and webhook tokens are redacted at every level.

discord.py's DEBUG logs carry whole gateway payloads (an INTERACTION_CREATE holds the interaction's token, good
for 15 minutes of replies as the bot) and request URLs (`.../webhooks/<application id>/<token>/...`). The filter
formats each record once, redacts the text and its traceback, and hands the handlers the clean version.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# "token": "..." in a payload, whether logged as a Python dict or as JSON.
_PAYLOAD_TOKEN = re.compile(r"""(['"]token['"]\s*:\s*)(['"])[^'"]+\2""")
# .../webhooks/<id>/<token> and .../interactions/<id>/<token>/callback in URLs and routes.
_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+")
# Anything shaped like a bot token (base64 id . timestamp . hmac), even one that is not ours.
_BOT_TOKEN = re.compile(r"\b[\w-]{23,28}\.[\w-]{6}\.[\w-]{27,}")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the given secrets and every token-shaped value replaced by REDACTED."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _PAYLOAD_TOKEN.sub(rf"\1\2{REDACTED}\2", text)
    text = _URL_TOKEN.sub(rf"\1{REDACTED}", text)
    return _BOT_TOKEN.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """A handler filter that rewrites each record with its message and traceback redacted; it drops nothing."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's message, traceback and stack in place (once per record); always keeps it."""
        if getattr(record, "_redacted", False):  # several handlers share one record
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        record._redacted = True
        return True


def install(token: str | None = None, handlers: list[logging.Handler] | None = None) -> RedactTokens:
    """Add the filter to `handlers` (default: every handler of the root logger, so call it after logging is set
    up, e.g. after `discord.utils.setup_logging`). Returns the filter."""
    redactor = RedactTokens(*([token] if token else []))
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(redactor)
    return redactor
