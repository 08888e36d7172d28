"""The log filter: discord.py's own DEBUG records keep no token, at any level, through any handler; no URL's
password (the Redis of the celery backend) reaches a log line or a repr."""

from __future__ import annotations

import io
import json
import logging

import pytest
from discord.gateway import DiscordWebSocket

from bot.config import Settings
from bot.logs import REDACTED, install, redact

BOT_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab"
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OmxHbGVOWVJGNktycHJCUnNOTWxsMXM4M2tTcmdsWTB3"


@pytest.fixture
def logged():
    """A root handler writing to a string, with the filter installed, and discord.py at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    install(BOT_TOKEN, handlers=[handler])
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _gateway() -> DiscordWebSocket:
    """discord.py's real gateway class, with just what `received_message` touches before and after its log line."""
    ws = DiscordWebSocket.__new__(DiscordWebSocket)
    ws.log_receive = lambda msg: None
    ws._dispatch = lambda *args: None
    ws._keep_alive = None
    ws._discord_parsers = {}
    ws._dispatch_listeners = []
    ws.shard_id = None
    ws.sequence = None
    return ws


async def test_gateway_interaction_payloads_lose_their_token(logged):
    payload = {
        "t": "INTERACTION_CREATE",
        "s": 7,
        "op": 0,
        "d": {
            "id": "1234567890123456789",
            "application_id": "1098765432109876543",
            "type": 2,
            "token": INTERACTION_TOKEN,
            "data": {"name": "imagine", "options": [{"name": "prompt", "value": "a castle"}]},
        },
    }
    await _gateway().received_message(json.dumps(payload))
    text = logged.getvalue()
    assert "DEBUG discord.gateway For Shard ID None: WebSocket Event:" in text  # discord.py's own record
    assert INTERACTION_TOKEN not in text and f"'token': '{REDACTED}'" in text
    assert "'name': 'imagine'" in text  # the rest of the payload is still there to debug with


def test_webhook_urls_and_the_bot_token_are_redacted_at_every_level(logged):
    url = f"https://discord.com/api/v10/webhooks/1098765432109876543/{INTERACTION_TOKEN}/messages/@original"
    logging.getLogger("discord.http").debug("%s %s with %s has returned %s", "PATCH", url, None, 200)
    callback = f"https://discord.com/api/v10/interactions/1234567890123456789/{INTERACTION_TOKEN}/callback"
    logging.getLogger("discord.webhook.async_").warning("Webhook ID %s is rate limited: %s", 1, callback)
    logging.getLogger("bot").error("login with %s failed", BOT_TOKEN)
    try:
        raise RuntimeError(f"refused {BOT_TOKEN}")
    except RuntimeError:
        logging.getLogger("bot").exception("boom")
    text = logged.getvalue()
    assert INTERACTION_TOKEN not in text and BOT_TOKEN not in text
    assert f"/webhooks/1098765432109876543/{REDACTED}/messages/@original" in text
    assert f"/interactions/1234567890123456789/{REDACTED}/callback" in text
    assert f"RuntimeError: refused {REDACTED}" in text


def test_redact_leaves_ordinary_text_alone():
    text = "job 12 done: 'a castle', 300 steps, https://discord.com/channels/1/2/3"
    assert redact(text) == text
    assert redact('{"token": "abc.def"}') == f'{{"token": "{REDACTED}"}}'


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:hunter22@queue:6379/0", f"redis://:{REDACTED}@queue:6379/0"),
        ("rediss://imagine:hunter22@queue.example:6380/1", f"rediss://imagine:{REDACTED}@queue.example:6380/1"),
        ("redis://:p%40ss%2Fw0rd@10.0.0.5/0", f"redis://:{REDACTED}@10.0.0.5/0"),
        ("redis://:p@ss@queue:6379", f"redis://:{REDACTED}@queue:6379"),  # an '@' left unencoded
        (
            "rediss://queue:6380/0?password=hunter22&ssl_cert_reqs=required",
            f"rediss://queue:6380/0?password={REDACTED}&ssl_cert_reqs=required",
        ),  # fmt: skip
        ("redis://imagine@queue:6379/0", "redis://imagine@queue:6379/0"),  # a user alone is no secret
    ],
)
def test_url_passwords_are_redacted(url, shown):
    assert redact(f"Redis at {url} cannot be reached") == f"Redis at {shown} cannot be reached"
    assert redact(repr({"redis_url": url})) == repr({"redis_url": shown})


def _settings(url: str) -> Settings:
    return Settings.from_env({"DISCORD_TOKEN": BOT_TOKEN, "IMAGINE_REDIS_URL": url})


def test_the_settings_secrets_never_reach_a_log_line():
    """The token and the Redis password, as written in the URL and as Redis receives it (percent-decoded), even
    when a library logs one of them bare."""
    settings = _settings("rediss://imagine:correct%20horse%2Fbattery@queue.example:6380/0")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.secrets")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        install(*settings.secrets(), handlers=[handler])
        log.info("starting with %r", settings)
        log.warning("AUTH %s refused", "correct horse/battery")
        log.debug("connecting to %s", settings.redis_url)
        try:
            raise ConnectionError(f"lost {settings.redis_url} (password 'correct horse/battery')")
        except ConnectionError:
            log.exception("Redis is away")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    for secret in (BOT_TOKEN, "correct horse/battery", "correct%20horse%2Fbattery", "horse"):
        assert secret not in text
    assert "rediss://imagine:" in text and "@queue.example:6380/0" in text  # where it connects is still said


def test_the_settings_repr_hides_the_redis_password():
    settings = _settings("redis://:hunter22@queue:6379/0")
    assert "hunter22" not in repr(settings) and f"redis://:{REDACTED}@queue:6379/0" in repr(settings)
    assert settings.redis_url == "redis://:hunter22@queue:6379/0"  # the real one is still there to connect with
