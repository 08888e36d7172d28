"""Keep secrets out of the logs and messages: the bot token, interaction and webhook tokens, and every password in a
URL (the Redis of the celery backend: `redis://:pw@host`, `rediss://user:pw@host`) are redacted at every level.

`redact` is the one redactor; `RedactTokens` applies it to every log record, and the start-up check, the settings'
repr and the worker's own sentences pass their text through it too. `JsonLines` (IMAGINE_LOG_FORMAT=json) writes each
record as one JSON object, its text passed through `redact` again, with the id of the job whose work logged it
(`job_scope` marks that work: a job's task, and the threads and tasks it starts, inherit the mark).

discord.py's DEBUG logs carry whole gateway
payloads (an INTERACTION_CREATE holds the interaction's token, good for 15 minutes of replies as the bot) and
request URLs (`.../webhooks/<application id>/<token>/...`). The filter formats each record once, redacts the text
and its traceback, and hands the handlers the clean version.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, urlsplit

REDACTED = "[redacted]"
# The job whose work runs in this context (asyncio tasks and `asyncio.to_thread` copy it); None outside any job.
_JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar("imagine_job", default=None)

# "token": "..." in a payload, whether logged as a Python dict or as JSON.
_PAYLOAD_TOKEN = re.compile(r"""(['"]token['"]\s*:\s*)(['"])[^'"]+\2""")
# .../webhooks/<id>/<token> and .../interactions/<id>/<token>/callback in URLs and routes.
_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+")
# Anything shaped like a bot token (base64 id . timestamp . hmac), even one that is not ours.
_BOT_TOKEN = re.compile(r"\b[\w-]{23,28}\.[\w-]{6}\.[\w-]{27,}")
# scheme://user:password@host: the password runs to the authority's last '@' (one left unencoded included).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s'\"<>]*:)[^/?#\s'\"<>]*(@)")
# ?password=... or &password=... in a URL's query (redis-py reads the password from there too).
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pass|auth|token)=)[^&#\s'\"<>]+", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the given secrets, every password in a URL and every token-shaped value replaced by REDACTED."""
    for secret in sorted(secrets, key=len, reverse=True):  # the longest first: one secret may contain another
        if secret:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}\2", text)
    text = _QUERY_PASSWORD.sub(rf"\1{REDACTED}", text)
    text = _PAYLOAD_TOKEN.sub(rf"\1\2{REDACTED}\2", text)
    text = _URL_TOKEN.sub(rf"\1{REDACTED}", text)
    return _BOT_TOKEN.sub(REDACTED, text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The password a URL carries (in its user part or its query), as written and as the server receives it
    (percent-decoded): a library may show either."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""] + parse_qs(parts.query).get("password", [])
    except ValueError:  # not a URL one can split (an unclosed [ of an IPv6 host): nothing to take from it
        return ()
    found = [s for s in found if s]
    return tuple(dict.fromkeys(found + [unquote(s) for s in found]))


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


def install(*secrets: str | None, handlers: list[logging.Handler] | None = None) -> RedactTokens:
    """Add the filter, redacting `secrets` (the bot's: `Settings.secrets()`) besides every token- and
    password-shaped value, to `handlers` (default: every handler of the root logger, so call it after logging is
    set up, e.g. after `discord.utils.setup_logging`). A handler that has one gets the new secrets too. Returns the
    filter."""
    redactor = RedactTokens(*(s for s in secrets if s))
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        present = next((f for f in handler.filters if isinstance(f, RedactTokens)), None)
        if present is None:
            handler.addFilter(redactor)
        else:
            present.secrets = tuple(dict.fromkeys(present.secrets + redactor.secrets))
    return redactor


def job_scope(job_id: int | None) -> contextvars.Token:
    """Mark the current context (a job's task, a worker's thread running one job) as the work of `job_id`: every
    record logged from it, and from the tasks and threads it starts, carries the id. Returns the token to reset."""
    return _JOB.set(job_id)


def leave_job_scope(token: contextvars.Token) -> None:
    """Undo a `job_scope` (a worker's pool thread goes on to other work after its job)."""
    _JOB.reset(token)


def current_job() -> int | None:
    """The job whose work runs in this context, if any."""
    return _JOB.get()


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the job's id where the record was logged
    in a job's work (`job_scope`, or `extra={"job_id": ...}`), and the traceback. Every text passes `redact` (with
    `secrets`) here too, whatever filter ran before."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage(), self.secrets),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            job_id = _JOB.get()
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = redact(record.exc_text, self.secrets)
        if record.stack_info:
            line["stack"] = redact(record.stack_info, self.secrets)
        return json.dumps(line, ensure_ascii=False, default=str)
