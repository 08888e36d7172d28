"""Members act: slash commands, button and menu clicks, modal submissions, message context menus, reactions; and
the interaction routes the bot answers them through, with Discord's deadline (3 s to the first answer, one answer per
interaction) and the token's webhook routes (followups, the original response)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tests.bot.loopback import _payloads as p
from tests.bot.loopback._rest import UNKNOWN_MESSAGE, Call, error

DEADLINE = 3.0  # seconds from INTERACTION_CREATE to the first callback
TOKEN_LIFETIME = 15 * 60.0  # seconds the token's webhook routes work


@dataclass
class InteractionRecord:
    """One interaction a member made, and how the bot answered it (times are time.monotonic())."""

    kind: str  # "slash:imagine", "click:imagine:reroll:12", "modal:<custom_id>", "menu:Describe image"
    user: int  # member index
    token: str
    id: int
    channel_id: int
    sent_at: float = 0.0  # when INTERACTION_CREATE was handed to the bot's gateway connection
    message_id: int | None = None  # the message a click or a context menu acted on
    answered_at: float | None = None  # when the first callback arrived
    callback_type: int | None = None  # 4 message, 5 deferred, 6 deferred update, 7 update, 9 modal, ...
    status: int | None = None  # the HTTP status the first callback got
    error_code: int | None = None  # Discord's JSON error code when it was refused
    original_id: int | None = None  # the message the response made or acted on
    followups: list[int] = field(default_factory=list)
    callbacks: list[tuple[float, int | None, int, int | None]] = field(default_factory=list)  # every try

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def latency(self) -> float | None:
        """Seconds from the event to the first callback's arrival (None: never answered)."""
        return None if self.answered_at is None else self.answered_at - self.sent_at

    @property
    def clean(self) -> bool:
        """Answered once, in time, and accepted."""
        return self.acknowledged and len(self.callbacks) == 1


def _prefix(custom_id: str) -> str:
    return custom_id.rsplit(":", 1)[0] if ":" in custom_id else custom_id


def _submitted(modal: dict[str, Any] | None, fields: dict[str, str]) -> list[dict[str, Any]]:
    """A MODAL_SUBMIT's components: the modal's own layout (rows or labels) with each text input's value."""
    if modal is None:
        return [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in fields.items()]
    known = {c["custom_id"] for c in p.walk_components(modal.get("components") or []) if c.get("type") == 4}
    if unknown := set(fields) - known:
        raise ValueError(f"the modal has no text input {sorted(unknown)}; it has {sorted(known)}")

    def value(item: dict[str, Any]) -> dict[str, Any]:
        cid = item["custom_id"]
        return {"type": 4, "custom_id": cid, "value": fields.get(cid, item.get("value") or "")}

    layout = []
    for top in modal.get("components") or []:
        if top.get("type") == 1:
            layout.append({"type": 1, "components": [value(c) for c in top["components"] if c.get("type") == 4]})
        elif top.get("type") == 18 and (top.get("component") or {}).get("type") == 4:
            layout.append({"type": 18, "component": value(top["component"])})
    return layout


class Interactions:
    """The interaction half of the stand-in (a part of `LoopbackDiscord`)."""

    def _setup_interactions(self) -> None:
        self.interactions: dict[str, InteractionRecord] = {}
        self.modals: dict[str, dict[str, Any]] = {}  # interaction token -> the modal (type 9) the bot answered with
        self.interaction_deadline = DEADLINE
        self.token_lifetime = TOKEN_LIFETIME
        self.reaction_events: list[tuple[str, int, int, str]] = []  # ("add" | "remove", member, message, emoji)

    # -- what members do -----------------------------------------------------------------------------------------
    def _command(self, name: str, kind: int) -> dict[str, Any]:
        for command in [*self.guild_commands, *self.commands]:
            if command["name"] == name and command.get("type", 1) == kind:
                return command
        raise LookupError(f"no command {name!r} of type {kind}; the bot synced {[c['name'] for c in self.commands]}")

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        user: int = 0,
        attachments: dict[str, tuple[str, bytes]] | None = None,
        channel_id: int = p.CHANNEL_ID,
    ) -> str:
        """`/name options` by member `user` ("settings me" for a subcommand); `attachments` maps an option to
        (filename, bytes), served by the stand-in. Returns the interaction token."""
        first, *subs = name.split()
        command = self._command(first, 1)
        schema, nesting = command.get("options") or [], []
        for sub in subs:  # down through the subcommand group and the subcommand
            option = next(o for o in schema if o["name"] == sub)
            nesting.append((sub, option["type"]))
            schema = option.get("options") or []
        types = {o["name"]: o["type"] for o in schema}
        given = {**(options or {}), **(attachments or {})}
        if unknown := set(given) - set(types):
            raise ValueError(f"/{name} has no option {sorted(unknown)}; it has {sorted(types)}")
        chosen = [{"name": key, "type": types[key], "value": value} for key, value in (options or {}).items()]
        resolved: dict[str, Any] = {}
        for key, (filename, data) in (attachments or {}).items():
            served = self._serve(filename, data, "ephemeral-attachments", ephemeral=True)
            resolved.setdefault("attachments", {})[served["id"]] = served
            chosen.append({"name": key, "type": 11, "value": served["id"]})
        for sub, kind in reversed(nesting):
            chosen = [{"name": sub, "type": kind, "options": chosen}]
        data = {"id": command["id"], "name": first, "type": 1, "options": chosen}
        if resolved:
            data["resolved"] = resolved
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._interact(f"slash:{name}", user, 2, data, channel_id)

    async def click(self, message_id: int, custom_id: str, user: int = 0, values: list[str] | None = None) -> str:
        """Member `user` clicks a button (or, with `values`, picks from a select menu) of a message."""
        message = self.messages[message_id]
        found = [c for c in p.walk_components(message.get("components") or []) if c.get("custom_id") == custom_id]
        if not found:
            has = self.custom_ids(message_id)
            raise ValueError(f"message {message_id} has no component {custom_id!r}; it has {has}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": found[0]["type"]}
        if values is not None:
            data["values"] = list(values)
        kind = f"click:{_prefix(custom_id)}"
        return await self._interact(kind, user, 3, data, int(message["channel_id"]), message)

    async def submit_modal(
        self, custom_id: str, fields: dict[str, str], user: int = 0, message_id: int | None = None
    ) -> str:
        """Member `user` submits the modal `custom_id` (from `self.modals`) with `fields` (text input id -> text);
        `message_id`: the message whose component opened it."""
        modal = next((m for m in reversed(self.modals.values()) if m.get("custom_id") == custom_id), None)
        data = {"custom_id": custom_id, "components": _submitted(modal, fields)}
        message = self.messages[message_id] if message_id is not None else None
        channel_id = int(message["channel_id"]) if message is not None else p.CHANNEL_ID
        return await self._interact(f"modal:{_prefix(custom_id)}", user, 5, data, channel_id, message)

    def modal_inputs(self, token: str) -> tuple[str, list[str]]:
        """The custom_id of the modal the bot answered interaction `token` with, and its text inputs' custom_ids."""
        modal = self.modals[token]
        inputs = [c["custom_id"] for c in p.walk_components(modal.get("components") or []) if c.get("type") == 4]
        return modal["custom_id"], inputs

    async def context_menu(self, name: str, message_id: int, user: int = 0) -> str:
        """Member `user` runs the message command `name` (e.g. "Describe image") on a message."""
        command = self._command(name, 3)
        message = self.messages[message_id]
        data = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): message}},
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._interact(f"menu:{name}", user, 2, data, int(message["channel_id"]), message=None)

    async def react(self, message_id: int, emoji: str = "👍", user: int = 0) -> bool:
        """Member `user` adds a reaction; False if it was already there (Discord then sends nothing)."""
        return await self._member_reaction(message_id, emoji, user, True)

    async def unreact(self, message_id: int, emoji: str = "👍", user: int = 0) -> bool:
        """Member `user` takes a reaction away; False if there was none."""
        return await self._member_reaction(message_id, emoji, user, False)

    async def _member_reaction(self, message_id: int, emoji: str, user: int, present: bool) -> bool:
        self._check_member(user)
        message = self.messages[message_id]
        changed = self._set_reaction(message, emoji, p.USER_ID + user, present)
        if changed is None:
            raise ValueError(f"message {message_id} already has {len(message['reactions'])} distinct reactions")
        if changed:
            self.reaction_events.append(("add" if present else "remove", user, message_id, emoji))
            await self._reaction_event(message, emoji, user, present)
        return bool(changed)

    def _check_member(self, user: int) -> None:
        if not 0 <= user < self.members:
            raise ValueError(f"member {user} does not exist; this guild has {self.members} (0-{self.members - 1})")

    async def _interact(
        self, kind: str, user: int, itype: int, data: dict[str, Any], channel_id: int, message: dict | None = None
    ) -> str:
        self._check_member(user)
        iid = next(self._ids)
        token = f"token-{iid}"
        channel = dict(self._channel_payload(channel_id) or {})
        channel["permissions"] = p.interaction_member(user)["permissions"]
        payload = {
            "id": str(iid),
            "application_id": str(p.APP_ID),
            "type": itype,
            "token": token,
            "version": 1,
            "guild_id": str(p.GUILD_ID),
            "channel_id": str(channel_id),
            "channel": channel,
            "member": p.interaction_member(user),
            "app_permissions": p.ALL_PERMISSIONS,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(p.GUILD_ID)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
            "data": data,
        }
        mid = None
        if message is not None:
            payload["message"] = message
            mid = int(message["id"])
        elif itype == 2 and data.get("type") == 3:
            mid = int(data["target_id"])
        # Discord's clock starts when the member acts: the moment the event is handed to the bot's connection
        record = InteractionRecord(kind, user, token, iid, channel_id, sent_at=time.monotonic(), message_id=mid)
        self.interactions[token] = record
        await self._dispatch("INTERACTION_CREATE", payload)
        return token

    # -- the bot's answers -------------------------------------------------------------------------------------
    async def _callback(self, call: Call):
        record = self.interactions.get(call.params["interaction_token"])
        if record is None or str(record.id) != call.params["interaction_id"]:
            return error(404, 10062, "Unknown interaction")
        body = call.body or {}
        ctype, data = body.get("type"), body.get("data") or {}
        first = record.answered_at is None
        if first:
            record.answered_at = call.arrived
        if record.acknowledged:
            answer = error(400, 40060, "Interaction has already been acknowledged.")
        elif call.arrived - record.sent_at > self.interaction_deadline:
            answer = error(404, 10062, "Unknown interaction")
        elif (refused := self._too_large(call.files)) is not None:
            answer = refused
        else:
            answer = (await self._respond(record, ctype, data, call.files),)
        status = answer[1] if len(answer) > 1 else 200
        code = answer[0].get("code") if status >= 400 else None
        record.callbacks.append((call.arrived, ctype, status, code))
        if first:
            record.callback_type, record.status, record.error_code = ctype, status, code
        return answer

    async def _respond(self, record: InteractionRecord, ctype: int, data: dict[str, Any], files) -> dict[str, Any]:
        """Carry out an accepted callback; the answer to `?with_response=1`."""
        record.status = 200  # acknowledged from here on, even while this coroutine still runs
        message = None
        if ctype in (4, 5):  # a message, or "thinking" (a loading message the first followup fills)
            body = dict(data)
            if ctype == 5:
                body = {"flags": (data.get("flags") or 0) | p.LOADING}
            message = self._new_message(record.channel_id, body, files, webhook=True)
            self.messages[("original", record.token)] = message
            record.original_id = int(message["id"])
            await self._announce("MESSAGE_CREATE", message)
        elif ctype in (6, 7) and record.message_id is not None:  # (deferred) update of the component's message
            message = self.messages.get(record.message_id)
            record.original_id = record.message_id
            if ctype == 7 and message is not None:
                self._edit(message, data, files)
                await self._announce("MESSAGE_UPDATE", message)
        elif ctype == 9:
            self.modals[record.token] = data
        answer: dict[str, Any] = {
            "interaction": {
                "id": str(record.id),
                "type": {"slash": 2, "menu": 2, "click": 3, "modal": 5}[record.kind.split(":")[0]],
                "response_message_id": message["id"] if message else None,
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": bool(message and message["flags"] & p.EPHEMERAL),
            },
            "resource": {"type": ctype},
        }
        if message is not None:
            answer["resource"]["message"] = message
        return answer

    def _token_record(self, call: Call) -> InteractionRecord | tuple[dict[str, Any], int]:
        """The interaction whose token a webhook route names, or Discord's refusal."""
        record = self.interactions.get(call.params["webhook_token"])
        if call.params["webhook_id"] != str(p.APP_ID) or record is None:
            return error(401, 50027, "Invalid Webhook Token")
        if call.arrived - record.sent_at > self.token_lifetime:
            return error(401, 50027, "Invalid Webhook Token")
        if not record.acknowledged:
            return error(404, 10015, "Unknown Webhook")
        return record

    async def _followup(self, call: Call):
        record = self._token_record(call)
        if not isinstance(record, InteractionRecord):
            return record
        if refused := self._too_large(call.files):
            return refused
        body = call.body or {}
        original = self.messages.get(record.original_id) if record.original_id is not None else None
        if original is not None and original["flags"] & p.LOADING:  # the first followup fills the "thinking" one
            original["flags"] &= ~p.LOADING
            self._edit(original, {k: v for k, v in body.items() if k != "flags"}, call.files)
            await self._announce("MESSAGE_UPDATE", original)
            message = original
        else:
            channel_id = int(call.request.query.get("thread_id", record.channel_id))
            message = self._new_message(channel_id, body, call.files, webhook=True)
            record.followups.append(int(message["id"]))
            await self._announce("MESSAGE_CREATE", message)
        return (message,) if call.request.query.get("wait") in ("1", "true", "True") else (None,)

    async def _webhook_message(self, call: Call):
        record = self._token_record(call)
        if not isinstance(record, InteractionRecord):
            return record
        wanted = call.params["message_id"]
        mid = record.original_id if wanted == "@original" else int(wanted)
        if mid is None or (mid != record.original_id and mid not in record.followups) or mid not in self.messages:
            return UNKNOWN_MESSAGE
        message = self.messages[mid]
        method = call.request.method
        if method == "GET":
            return (message,)
        if method == "DELETE":
            await self._remove(message)
            return (None,)
        if refused := self._too_large(call.files):
            return refused
        message["flags"] &= ~p.LOADING
        self._edit(message, call.body or {}, call.files)
        await self._announce("MESSAGE_UPDATE", message)
        return (message,)
