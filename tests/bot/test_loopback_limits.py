"""The loopback Discord stand-in behaves like Discord where load matters: rate-limit buckets and their headers, the
global limit, the 3 s interaction deadline and the single answer, served attachments, heartbeats and RESUME; and the
real bot, with several members and the limits enforced, answers every interaction in time without a 429."""

from __future__ import annotations

import asyncio
import io
import json
import time

import aiohttp
import discord
import pytest
import yarl
from PIL import Image

from tests.bot.loopback import BOT_ID, CHANNEL_ID, DEADLINE, GUILD_ID, USER_ID, LoopbackDiscord

MESSAGES = "POST /channels/{channel_id}/messages"


def _png(size: tuple[int, int] = (12, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def stand_in():
    server = LoopbackDiscord(members=3)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def _call(http, stand_in, method: str, path: str, body=None, bot: bool = True):
    """One REST request as discord.py makes it (a bot token, JSON); returns (status, headers, JSON or None)."""
    headers = {"Authorization": "Bot loopback-token"} if bot else {}
    async with http.request(method, stand_in.api_base + path, json=body, headers=headers) as response:
        text = await response.text()
        return response.status, response.headers, json.loads(text) if text else None


async def _commands(http, stand_in) -> None:
    """Register /imagine as the bot does at start (global commands)."""
    options = [
        {"name": "prompt", "type": 3, "description": "what", "required": True},
        {"name": "init_image", "type": 11, "description": "a picture"},
    ]
    command = {"name": "imagine", "description": "paint", "type": 1, "options": options}
    status, _, _ = await _call(http, stand_in, "PUT", f"/applications/{BOT_ID}/commands", [command])
    assert status == 200


async def _answer(http, stand_in, token: str, kind: int = 4, data=None, bot: bool = False):
    """Answer an interaction as discord.py does: `?with_response=1`, without the bot token unless `bot`."""
    record = stand_in.interactions[token]
    path = f"/interactions/{record.id}/{token}/callback?with_response=1"
    return await _call(http, stand_in, "POST", path, {"type": kind, "data": data or {"content": "ok"}}, bot=bot)


# -- buckets and headers ----------------------------------------------------------------------------------------


async def test_every_answer_carries_the_bucket_headers(stand_in, http):
    before = time.time()
    status, headers, _ = await _call(http, stand_in, "POST", f"/channels/{CHANNEL_ID}/messages", {"content": "a"})
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Remaining"] == "4"
    reset_after = float(headers["X-RateLimit-Reset-After"])
    assert 4.9 < reset_after <= 5.0
    assert before + 4.9 < float(headers["X-RateLimit-Reset"]) < time.time() + 5.1  # epoch seconds
    bucket = headers["X-RateLimit-Bucket"]
    _, again, body = await _call(http, stand_in, "POST", f"/channels/{CHANNEL_ID}/messages", {"content": "b"})
    assert again["X-RateLimit-Bucket"] == bucket and again["X-RateLimit-Remaining"] == "3"
    mid = body["id"]
    _, edit, _ = await _call(http, stand_in, "PATCH", f"/channels/{CHANNEL_ID}/messages/{mid}", {"content": "c"})
    assert edit["X-RateLimit-Bucket"] != bucket and edit["X-RateLimit-Remaining"] == "4"  # edits: a bucket of their own
    for method, path in (("GET", "/users/@me"), ("GET", "/gateway/bot"), ("GET", "/channels/1")):
        status, headers, _ = await _call(http, stand_in, method, path)
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Bucket"} <= set(headers)
    assert status == 404  # an unknown channel is refused, with the headers all the same


async def test_the_sixth_message_in_five_seconds_waits_exactly_until_the_reset(stand_in, http):
    path = f"/channels/{CHANNEL_ID}/messages"
    for n in range(5):
        status, headers, _ = await _call(http, stand_in, "POST", path, {"content": str(n)})
        assert status == 200 and headers["X-RateLimit-Remaining"] == str(4 - n)
    status, headers, body = await _call(http, stand_in, "POST", path, {"content": "sixth"})
    assert status == 429
    assert body["message"] == "You are being rate limited." and body["global"] is False
    retry_after = body["retry_after"]
    assert 4.0 < retry_after <= 5.0
    assert headers["X-RateLimit-Scope"] == "user" and headers["Via"] == "1.1 google"
    assert int(headers["Retry-After"]) >= retry_after and "X-RateLimit-Global" not in headers
    assert headers["X-RateLimit-Remaining"] == "0"
    assert stand_in.rate_limited == {MESSAGES: 1}
    # another channel is another bucket (the major parameter): a thread can be posted to meanwhile
    status, _, thread = await _call(http, stand_in, "POST", f"/channels/{CHANNEL_ID}/threads", {"name": "t"})
    assert status == 200
    status, _, _ = await _call(http, stand_in, "POST", f"/channels/{thread['id']}/messages", {"content": "t"})
    assert status == 200
    await asyncio.sleep(retry_after - 0.4)
    status, _, _ = await _call(http, stand_in, "POST", path, {"content": "too early"})
    assert status == 429
    await asyncio.sleep(0.4)
    status, headers, _ = await _call(http, stand_in, "POST", path, {"content": "in time"})
    assert status == 200 and headers["X-RateLimit-Remaining"] == "4"  # the whole window came back
    assert stand_in.rate_limited == {MESSAGES: 2}
    assert [m["content"] for m in stand_in.history(CHANNEL_ID)][0] == "in time"


async def test_reactions_are_one_per_quarter_second_per_channel(stand_in, http):
    _, _, message = await _call(http, stand_in, "POST", f"/channels/{CHANNEL_ID}/messages", {"content": "vote"})
    base = f"/channels/{CHANNEL_ID}/messages/{message['id']}/reactions"
    status, headers, _ = await _call(http, stand_in, "PUT", f"{base}/%F0%9F%91%8D/@me")
    assert status == 204 and headers["X-RateLimit-Limit"] == "1" and headers["X-RateLimit-Remaining"] == "0"
    status, _, body = await _call(http, stand_in, "PUT", f"{base}/%F0%9F%91%8E/@me")
    assert status == 429 and 0 < body["retry_after"] <= 0.25
    await asyncio.sleep(body["retry_after"])
    status, _, _ = await _call(http, stand_in, "PUT", f"{base}/%F0%9F%91%8E/@me")
    assert status == 204
    assert stand_in.reactions(int(message["id"]), "👍") == [BOT_ID]


async def test_the_global_limit_is_fifty_a_second_and_spares_interaction_callbacks(stand_in, http):
    await _commands(http, stand_in)
    token = await stand_in.slash("imagine", {"prompt": "spared"})
    # 100 requests, each to its own bucket (unknown channels: one major parameter each), as fast as can be
    answers = await asyncio.gather(*(_call(http, stand_in, "GET", f"/channels/{n}") for n in range(100)))
    refused = [(headers, body) for status, headers, body in answers if status == 429]
    assert refused and all(body["global"] is True for _, body in refused)
    headers, body = refused[0]
    assert headers["X-RateLimit-Global"] == "true" and headers["X-RateLimit-Scope"] == "global"
    assert 0 < body["retry_after"] <= 1.0
    burst = stand_in.requests[-100:]
    first = min(r.at for r in burst)
    admitted = [r for r in burst if r.status != 429 and r.at < first + 1.0]
    assert len(admitted) <= 50
    # the callback is not bound by the global limit, even sent with the bot token
    status, _, _ = await _answer(http, stand_in, token, bot=True)
    assert status == 200
    await asyncio.sleep(max(body["retry_after"] for _, body in refused))
    status, _, _ = await _call(http, stand_in, "GET", "/users/@me")
    assert status == 200
    assert stand_in.rate_limited == {"GET /channels/{channel_id}": len(refused)}


async def test_without_enforcement_there_are_no_buckets_and_no_headers(http):
    server = LoopbackDiscord(enforce_limits=False)
    await server.start()
    try:
        for n in range(8):
            status, headers, _ = await _call(http, server, "POST", f"/channels/{CHANNEL_ID}/messages", {"content": n})
            assert status == 200 and "X-RateLimit-Remaining" not in headers
        assert not server.rate_limited
    finally:
        await server.stop()


# -- interactions -----------------------------------------------------------------------------------------------


async def test_a_callback_after_three_seconds_is_an_unknown_interaction(stand_in, http):
    await _commands(http, stand_in)
    token = await stand_in.slash("imagine", {"prompt": "late"}, user=2)
    record = stand_in.interactions[token]
    assert record.kind == "slash:imagine" and record.user == 2 and record.answered_at is None
    await asyncio.sleep(DEADLINE + 0.1)
    status, _, body = await _answer(http, stand_in, token)
    assert status == 404 and body == {"message": "Unknown interaction", "code": 10062}
    assert record.status == 404 and record.error_code == 10062 and record.latency > DEADLINE
    assert ("original", token) not in stand_in.messages  # nothing was posted
    # its token's webhook routes know nothing of it either: it was never acknowledged
    status, _, body = await _call(http, stand_in, "POST", f"/webhooks/{BOT_ID}/{token}?wait=1", {"content": "x"})
    assert status == 404 and body["code"] == 10015


async def test_a_second_answer_is_refused_and_the_token_serves_followups(stand_in, http):
    await _commands(http, stand_in)
    token = await stand_in.slash("imagine", {"prompt": "twice"})
    status, _, body = await _answer(http, stand_in, token, kind=5, data={"flags": 64})  # defer, thinking
    assert status == 200 and body["interaction"]["response_message_loading"] is True
    status, _, body = await _answer(http, stand_in, token)
    assert status == 400 and body == {"message": "Interaction has already been acknowledged.", "code": 40060}
    record = stand_in.interactions[token]
    assert record.status == 200 and record.callback_type == 5 and record.latency < DEADLINE and not record.clean
    assert [c[2] for c in record.callbacks] == [200, 400]
    # the first followup fills the "thinking" message; the next is a message of its own
    hook = f"/webhooks/{BOT_ID}/{token}"
    status, _, first = await _call(http, stand_in, "POST", f"{hook}?wait=1", {"content": "done"}, bot=False)
    assert status == 200 and first["id"] == str(record.original_id) and first["flags"] == 64
    status, _, second = await _call(http, stand_in, "POST", f"{hook}?wait=1", {"content": "more"}, bot=False)
    assert status == 200 and second["id"] != first["id"] and record.followups == [int(second["id"])]
    status, _, edited = await _call(http, stand_in, "PATCH", f"{hook}/messages/@original", {"content": "e"}, bot=False)
    assert status == 200 and edited["content"] == "e"
    status, _, fetched = await _call(http, stand_in, "GET", f"{hook}/messages/{second['id']}", bot=False)
    assert status == 200 and fetched["content"] == "more"
    status, _, body = await _call(http, stand_in, "GET", f"/webhooks/{BOT_ID}/not-a-token/messages/@original")
    assert status == 401 and body["code"] == 50027
    # an ephemeral message is not the bot token's to edit
    status, _, _ = await _call(http, stand_in, "PATCH", f"/channels/{CHANNEL_ID}/messages/{first['id']}", {})
    assert status == 404


async def test_members_click_submit_and_react_as_themselves(stand_in, http):
    row = {"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "imagine:reroll:7:ab12"}]}
    menu = {"type": 1, "components": [{"type": 3, "custom_id": "imagine:branchpick:7", "options": []}]}
    _, _, message = await _call(
        http, stand_in, "POST", f"/channels/{CHANNEL_ID}/messages", {"content": "m", "components": [row, menu]}
    )
    mid = int(message["id"])
    assert stand_in.custom_ids(mid) == ["imagine:reroll:7:ab12", "imagine:branchpick:7"]
    token = await stand_in.click(mid, "imagine:reroll:7:ab12", user=1)
    event = stand_in.dispatched()[-1]["d"]
    assert event["type"] == 3 and event["data"] == {"custom_id": "imagine:reroll:7:ab12", "component_type": 2}
    assert event["member"]["user"]["id"] == str(USER_ID + 1) and event["message"]["id"] == str(mid)
    assert stand_in.interactions[token].kind == "click:imagine:reroll:7"
    await stand_in.click(mid, "imagine:branchpick:7", user=2, values=["5"])
    picked = stand_in.dispatched()[-1]["d"]["data"]
    assert picked["component_type"] == 3 and picked["values"] == ["5"]
    with pytest.raises(ValueError):
        await stand_in.click(mid, "imagine:nothing:7")
    # a modal answer is recorded; its submission mirrors its layout
    text = {"type": 4, "custom_id": "prompt", "style": 2, "label": "New prompt", "value": "old"}
    modal = {"custom_id": "f00d", "title": "Steer", "components": [{"type": 1, "components": [text]}]}
    assert (await _answer(http, stand_in, token, kind=9, data=modal))[0] == 200
    assert stand_in.modal_inputs(token) == ("f00d", ["prompt"])
    token = await stand_in.submit_modal("f00d", {"prompt": "new"}, user=1, message_id=mid)
    submitted = stand_in.dispatched()[-1]["d"]
    assert submitted["type"] == 5 and submitted["data"]["components"][0]["components"][0]["value"] == "new"
    assert stand_in.interactions[token].kind == "modal:f00d"
    # reactions reach the gateway as Discord sends them, once per change
    assert await stand_in.react(mid, "👍", user=2) and not await stand_in.react(mid, "👍", user=2)
    added = stand_in.dispatched()[-1]
    assert added["t"] == "MESSAGE_REACTION_ADD"
    assert added["d"]["user_id"] == str(USER_ID + 2) and added["d"]["member"]["user"]["username"] == "member-2"
    assert added["d"]["guild_id"] == str(GUILD_ID) and added["d"]["message_author_id"] == str(BOT_ID)
    assert await stand_in.unreact(mid, "👍", user=2)
    assert stand_in.dispatched()[-1]["t"] == "MESSAGE_REACTION_REMOVE" and stand_in.reactions(mid, "👍") == []
    with pytest.raises(ValueError):
        await stand_in.react(mid, user=3)  # three members: 0, 1 and 2


async def test_attachments_are_served_at_the_stand_in(stand_in, http):
    await _commands(http, stand_in)
    picture = _png()
    await stand_in.slash("imagine", {"prompt": "from a picture"}, attachments={"init_image": ("seed.png", picture)})
    data = stand_in.dispatched()[-1]["d"]["data"]
    [option] = [o for o in data["options"] if o["name"] == "init_image"]
    resolved = data["resolved"]["attachments"][option["value"]]
    assert resolved["width"] == 12 and resolved["height"] == 8 and resolved["content_type"] == "image/png"
    assert resolved["url"].startswith(f"http://127.0.0.1:{stand_in.port}/")
    async with http.get(resolved["url"]) as response:
        assert response.status == 200 and await response.read() == picture
    # an upload of the bot is served too
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps({"content": "final"}), content_type="application/json")
    form.add_field("files[0]", picture, filename="imagine-3.png", content_type="image/png")
    headers = {"Authorization": "Bot loopback-token"}
    async with http.post(f"{stand_in.api_base}/channels/{CHANNEL_ID}/messages", data=form, headers=headers) as r:
        message = await r.json()
    [attachment] = message["attachments"]
    async with http.get(attachment["url"]) as response:
        assert response.status == 200 and await response.read() == picture
    async with http.get(attachment["url"].replace("imagine-3.png", "other.png")) as response:
        assert response.status == 404
    assert stand_in.final_images() == {3: [int(message["id"])]}
    assert stand_in.messages_with_files() == [message]


# -- the gateway ------------------------------------------------------------------------------------------------


async def _receive(ws) -> dict:
    return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)


async def test_heartbeats_are_timed_and_a_session_resumes(http):
    server = LoopbackDiscord(members=2, heartbeat_interval=0.2)  # a heartbeat is late after 0.2 * 1.1 + 1 s
    await server.start()
    try:
        async with http.ws_connect(server.gateway_url) as ws:
            assert await _receive(ws) == {"op": 10, "d": {"heartbeat_interval": 200}}
            await ws.send_str(json.dumps({"op": 2, "d": {"token": "t", "intents": 0, "large_threshold": 250}}))
            ready, created = await _receive(ws), await _receive(ws)
            assert ready["t"] == "READY" and ready["s"] == 1 and created["t"] == "GUILD_CREATE"
            names = [m["user"]["username"] for m in created["d"]["members"]]
            assert names == ["imagine", "alice", "member-1"]
            for pause in (0.0, 0.2, 1.4):
                await asyncio.sleep(pause)
                await ws.send_str(json.dumps({"op": 1, "d": 2}))
                assert (await _receive(ws))["op"] == 11
            assert server.heartbeats == 3 and len(server.heartbeat_times) == 3 and server.late_heartbeats == 1
        session = ready["d"]["session_id"]
        # a dispatch while the bot is away is kept for its RESUME
        message = server._new_message(CHANNEL_ID, {"content": "vote here"}, [])
        await server.react(int(message["id"]), "👍", user=1)
        async with http.ws_connect(server.gateway_url) as ws:
            await _receive(ws)  # HELLO
            await ws.send_str(json.dumps({"op": 6, "d": {"token": "t", "session_id": session, "seq": 2}}))
            missed, resumed = await _receive(ws), await _receive(ws)
            assert missed["t"] == "MESSAGE_REACTION_ADD" and missed["s"] == 3
            assert resumed["t"] == "RESUMED" and resumed["s"] == 4
        async with http.ws_connect(server.gateway_url) as ws:
            await _receive(ws)
            await ws.send_str(json.dumps({"op": 6, "d": {"token": "t", "session_id": "stale", "seq": 1}}))
            assert await _receive(ws) == {"op": 9, "d": False}
        assert (server.identifies, server.resumes, server.reconnects, server.invalid_sessions) == (1, 1, 2, 1)
    finally:
        await server.stop()


# -- the real bot -----------------------------------------------------------------------------------------------


@pytest.fixture
async def connected(monkeypatch, settings, gated, request):
    """The real bot (discord.py over sockets, the gated fake backend) connected to a stand-in made with the test's
    parameters (LoopbackDiscord's keywords)."""
    from bot.client import ImagineBot

    server = LoopbackDiscord(**getattr(request, "param", {}))
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
    bot = ImagineBot(settings, backend_factory=lambda s: gated)
    task = asyncio.create_task(bot.start("loopback-token"))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 60)
        yield bot, server
    finally:
        await bot.close()
        await asyncio.wait_for(task, 30)
        await server.stop()


async def _wait_for(predicate, timeout: float = 60.0, what: str = "the bot") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_discord_py_reads_the_headers_and_waits_instead_of_meeting_a_429(connected):
    bot, stand_in = connected
    channel = bot.get_channel(CHANNEL_ID)
    began, sent = time.monotonic(), len(stand_in.requests)
    await asyncio.gather(*(channel.send(f"burst {n}") for n in range(8)))
    posts = [r for r in stand_in.requests[sent:] if r.route == MESSAGES]
    assert sorted(r.json["content"] for r in posts if r.status == 200) == [f"burst {n}" for n in range(8)]
    assert stand_in.rate_limited[MESSAGES] == 0, stand_in.rate_limited
    assert time.monotonic() - began > 4.5  # the sixth waited for the bucket to reset (5 per 5 s)
    assert {m["content"] for m in stand_in.history(CHANNEL_ID)} >= {f"burst {n}" for n in range(8)}


@pytest.mark.parametrize("connected", [{"members": 2, "heartbeat_interval": 1.0}], indirect=True)
async def test_discord_py_answers_through_the_token_and_resumes_after_a_reconnect(connected):
    """discord.py's own calls work against the stand-in: defer, followup.send, edit_original_response, a followup's
    edit, reading a served attachment; and its keep-alive and RESUME."""
    bot, stand_in = connected
    seen: list[bytes] = []

    async def probe(interaction: discord.Interaction) -> None:
        if (interaction.data or {}).get("custom_id") != "probe:followup":
            return
        await interaction.response.defer(thinking=True)
        seen.append(await interaction.message.attachments[0].read())
        await interaction.followup.send("first")  # fills the thinking message
        second = await interaction.followup.send("second", wait=True)
        await interaction.edit_original_response(content="first, edited")
        await second.edit(content="second, edited")
        seen.append(b"done")

    bot.add_listener(probe, "on_interaction")
    picture = _png()
    channel = bot.get_channel(CHANNEL_ID)
    row = discord.ui.View()
    row.add_item(discord.ui.Button(label="Probe", custom_id="probe:followup"))
    posted = await channel.send("probe", file=discord.File(io.BytesIO(picture), filename="probe.png"), view=row)
    token = await stand_in.click(posted.id, "probe:followup", user=1)
    await _wait_for(lambda: b"done" in seen, 30, "the probe's answers")
    record = stand_in.interactions[token]
    assert seen[0] == picture and record.clean and record.callback_type == 5
    assert stand_in.messages[record.original_id]["content"] == "first, edited"
    assert [stand_in.messages[m]["content"] for m in record.followups] == ["second, edited"]
    # keep-alive: a heartbeat a second; then Discord asks for a reconnect and discord.py resumes the session
    await _wait_for(lambda: stand_in.heartbeats >= 3, 10, "three heartbeats")
    await stand_in.ask_reconnect()
    await _wait_for(lambda: stand_in.resumes == 1, 30, "a RESUME")
    assert stand_in.identifies == 1 and stand_in.reconnects == 1
    token = await stand_in.slash("queue", {}, user=1)
    await _wait_for(lambda: stand_in.interactions[token].answered_at is not None, 10, "/queue after the resume")
    assert stand_in.interactions[token].clean


@pytest.mark.parametrize("connected", [{"members": 4}], indirect=True)
async def test_members_use_the_real_bot_within_the_deadline_and_without_a_429(connected, gated):
    bot, stand_in = connected
    install = bot.jobs.install
    gated.hold = True  # job 1 stays running, so that its author can steer it
    await stand_in.slash("imagine", {"prompt": "a held lighthouse", "size": "square-small", "seed": 1}, user=0)

    def status_of(job: int) -> int | None:
        wanted = f"imagine:steer:{job}:{install}"
        found = [k for k in list(stand_in.messages) if isinstance(k, int) and wanted in stand_in.custom_ids(k)]
        return found[0] if found else None

    await _wait_for(lambda: status_of(1) is not None, what="job 1's status message with Steer")
    steer = await stand_in.click(status_of(1), f"imagine:steer:1:{install}", user=0)
    await _wait_for(lambda: steer in stand_in.modals, what="the Steer form")
    form, inputs = stand_in.modal_inputs(steer)
    await stand_in.submit_modal(form, {inputs[0]: "a steered lighthouse"}, user=0, message_id=status_of(1))
    for user in (1, 2, 3):
        await stand_in.slash("imagine", {"prompt": f"harbour {user}", "size": "square-small", "seed": user}, user=user)
    await stand_in.slash("queue", {}, user=1)
    await stand_in.slash("queue", {}, user=3)
    await _wait_for(lambda: (1, "a steered lighthouse") in gated.steered, what="the steer")
    gated.hold = False
    gated.release(1)
    await _wait_for(lambda: set(stand_in.final_images()) >= {1, 2, 3, 4}, what="four final images")

    first = stand_in.final_images()[1][0]
    await stand_in.click(first, f"imagine:reroll:1:{install}", user=1)
    await stand_in.react(first, "👍", user=2)
    await stand_in.react(first, "👍", user=3)
    await stand_in.react(first, "👍", user=0)  # the author's own vote does not count
    await stand_in.context_menu("Describe image", stand_in.final_images()[2][0], user=2)
    await _wait_for(lambda: 5 in stand_in.final_images(), what="the Reroll's image")
    records = stand_in.interactions.values()
    await _wait_for(lambda: len(records) == 10 and all(r.answered_at for r in records), what="ten answers")

    async def votes() -> int:
        return await bot.store.vote_total(1)

    deadline = time.monotonic() + 10
    while await votes() != 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await votes() == 2
    assert sorted(r.kind.split(":")[0] for r in records) == ["click"] * 2 + ["menu"] + ["modal"] + ["slash"] * 6
    late = {r.kind: round(r.latency, 2) for r in records if not r.clean or r.latency > DEADLINE}
    assert not late, f"answered late, twice or refused: {late}"
    assert not stand_in.rate_limited, f"429s: {dict(stand_in.rate_limited)}"
    assert all(len(ids) == 1 for ids in stand_in.final_images().values()), stand_in.final_images()
    deadline = time.monotonic() + 30  # the last post's reactions and link come after its message
    while {(await bot.store.get_job(job)).state.value for job in range(1, 6)} != {"done"}:
        assert time.monotonic() < deadline, [(await bot.store.get_job(job)).state.value for job in range(1, 6)]
        await asyncio.sleep(0.1)
    assert not stand_in.rate_limited, f"429s: {dict(stand_in.rate_limited)}"
