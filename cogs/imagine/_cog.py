"""Slash commands: /imagine, /queue, /history, /top; and the Reroll / Continue follow-ups of the buttons."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.catalog import SIZES, STYLES
from bot.jobs import JobKind, Origin, Posted, Ticket, continue_spec, reroll_spec, upscale_spec
from bot.queue import QueueFull, RateLimiter
from cogs.errors import reply
from cogs.imagine._animate import AnimateCommand
from cogs.imagine._embeds import duration, jump_url, one_line, queued_line, short, top_embed
from cogs.imagine._grid import contact_sheet
from cogs.imagine._views import branch_view, running_view, tournament_view
from engine.errors import InvalidSpec, OutOfMemory, public_message
from engine.prompts import split_regions
from engine.spec import JobSpec, random_seed

log = logging.getLogger(__name__)

SIZE_CHOICES = [app_commands.Choice(name=name, value=name) for name in SIZES]  # the one list: bot.catalog's
STYLE_CHOICES = [app_commands.Choice(name=name, value=name) for name in STYLES]
LayoutChoice = Literal["auto", "single", "panorama", "vertical", "mirror"]
MAX_ATTACHMENT = 10 * 1024 * 1024
BUTTON_RATE, BUTTON_PER = 3, 10.0  # Steer and the Branch menu (which make no job): a member's clicks, together


def _parent(interaction: discord.Interaction) -> int | None:
    """The channel a thread belongs to (None outside a thread)."""
    return getattr(interaction.channel, "parent_id", None)


def _origin(interaction: discord.Interaction) -> Origin:
    return Origin(interaction.guild_id, interaction.channel_id, interaction.user.id, _parent(interaction))


def _origin_of(interaction: discord.Interaction, parent) -> Origin:
    """A job that goes on from `parent` (Reroll, Continue, Upscale, Branch) lives in the parent's channel: the channel
    rule is checked there (and at that channel's own parent, recorded when the image was posted), not where the
    button happened to be clicked."""
    return Origin(interaction.guild_id, parent.channel_id, interaction.user.id, parent.audience_channel_id)


async def _answer(interaction: discord.Interaction, content: str, view: discord.ui.View) -> discord.Message:
    """Post a job's public message: as the answer, or, where the member was answered "thinking" (privately) while
    pictures were downloaded, in the channel, with the private answer pointing at it. The message posted."""
    if not interaction.response.is_done():
        await interaction.response.send_message(content, view=view)
        return await interaction.original_response()
    message = await interaction.channel.send(
        f"{interaction.user.mention} · {content}", view=view, allowed_mentions=discord.AllowedMentions.none()
    )
    try:
        await interaction.edit_original_response(content=f"Queued: {message.jump_url}")
    except discord.HTTPException:  # the job is queued and announced: a lost pointer is no reason to fail it
        log.warning("could not point the answer at job message %d", message.id)
    return message


class Imagine(AnimateCommand, commands.Cog):
    """Text to image, in a thread of its own."""

    def __init__(self, bot) -> None:
        self.bot = bot
        self._button_limiter = RateLimiter(BUTTON_RATE, BUTTON_PER)

    def _enter(self, interaction: discord.Interaction) -> Origin:
        """The member's request for pictures, counted against their cooldown (Cooldown when over it)."""
        return self.bot.jobs.enter(_origin(interaction))

    async def button_throttled(self, interaction: discord.Interaction) -> bool:
        """True (and the member told so) if they clicked job buttons more than BUTTON_RATE times in BUTTON_PER s."""
        retry_after = self._button_limiter.hit(interaction.user.id, asyncio.get_running_loop().time())
        if retry_after:
            await reply(interaction, f"Slow down a little: try again in {retry_after:.0f} s.")
        return bool(retry_after)

    @property
    def settings(self):
        """The bot's settings."""
        return self.bot.settings

    # -- /imagine -------------------------------------------------------------------------------------------
    @app_commands.command(name="imagine", description="Turn a text prompt into a picture (A / B for compositions)")
    @app_commands.describe(
        prompt="What to paint. Separate ideas with |, add :weight (negative pushes away); A / B puts A left of B",
        seed="Starting point; the same seed and settings give the same picture (random if empty)",
        steps="How long to work on it (more steps, more detail; default set by the server)",
        size="Shape of the picture (wide and panorama suit A / B prompts; BigGAN makes its model's size only)",
        style="Append a well-known style modifier",
        init_image="Start from this picture instead of noise",
        image_prompt="Aim towards this picture as well as the text",
        model="Which generator: a VQGAN, BigGAN, the DALL-E dVAE, or fourier / siren / pixels (no weights)",
        layout="Where A / B parts go: panorama (left to right), vertical, mirror (juxtaposed halves)",
        symmetry="Mirror layout: how strongly the two halves match in light and dark (default 0.5, 0 = off)",
        semantic="Mirror layout: how strongly objects on one side are translated to the other (default 0.1)",
        focus="Above 0 favours the overall composition, below 0 fine detail (default 0)",
        candidates="Seed tournament: start 2-9 seeds, see them side by side early, continue the best one",
        quality="draft: one CLIP model (fast); normal: two; best: three, scheduled cutouts (about 3x a draft's time)",
    )
    @app_commands.choices(size=SIZE_CHOICES, style=STYLE_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        steps: app_commands.Range[int, 10, 2000] | None = None,
        size: str | None = None,
        style: str | None = None,
        init_image: discord.Attachment | None = None,
        image_prompt: discord.Attachment | None = None,
        model: str | None = None,
        layout: LayoutChoice = "auto",
        symmetry: app_commands.Range[float, 0.0, 10.0] | None = None,
        semantic: app_commands.Range[float, 0.0, 1.0] | None = None,
        focus: app_commands.Range[float, -2.0, 2.0] | None = None,
        candidates: app_commands.Range[int, 2, 9] | None = None,
        quality: Literal["draft", "normal", "best"] | None = None,
    ) -> None:
        """/imagine: check the pictures, then queue a job or a tournament (the job service's gate checks the cooldown
        and the server's rules; the request is counted against the cooldown first, before any download)."""
        origin = self.bot.jobs.enter(_origin(interaction))
        rules = await self.bot.community.settings(interaction.guild_id)
        for picture in (init_image, image_prompt):
            if picture is not None:  # the names members give their files are shown in the recipe
                await self.bot.community.screen(interaction.guild_id, picture.filename, "picture's name")
        fields = dict(seed=seed, steps=steps, size=size, style=style, model=model, layout=layout, quality=quality)
        fields.update(tone_weight=symmetry, semantic_weight=semantic, size_weight=focus or 0.0)
        if init_image or image_prompt:
            # Downloading the pictures can outlast Discord's 3 s: answer "thinking" first, to the member only (a
            # refusal then stays theirs; the job's message is posted in the channel, see `_answer`).
            await interaction.response.defer(ephemeral=True, thinking=True)
        await self._imagine_with(interaction, origin, rules, prompt, fields, init_image, image_prompt, candidates)

    async def _imagine_with(self, interaction, origin, rules, prompt, fields, init_image, image_prompt, candidates):
        """/imagine once answered (or about to be): the pictures kept, the spec made, the job or tournament queued."""
        spec = self._spec(
            rules,
            prompt,
            **fields,
            init_image=await self._save_attachment(init_image, "init image") if init_image else None,
            image_prompts=(await self._save_attachment(image_prompt, "image prompt"),) if image_prompt else (),
        )
        if candidates:
            await self._start_tournament(interaction, origin, spec, candidates)
            return
        await self._submit(interaction, origin, spec)

    @app_commands.command(name="juxtapose", description="Two ideas mirrored side by side, e.g. heaven and hell")
    @app_commands.describe(
        left="What the left half shows",
        right="What the right half shows, mirroring the left",
        seed="Starting point (random if empty)",
        steps="How long to work on it",
        size="Shape of the picture",
        style="Append a well-known style modifier to both halves",
        symmetry="How strongly the halves match in light and dark (default 0.5, 0 = off)",
        semantic="How strongly objects on one side are translated to the other (default 0.1)",
    )
    @app_commands.choices(size=SIZE_CHOICES, style=STYLE_CHOICES)
    async def juxtapose(
        self,
        interaction: discord.Interaction,
        left: app_commands.Range[str, 1, 400],
        right: app_commands.Range[str, 1, 400],
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        steps: app_commands.Range[int, 10, 2000] | None = None,
        size: str = "wide",
        style: str | None = None,
        symmetry: app_commands.Range[float, 0.0, 10.0] | None = None,
        semantic: app_commands.Range[float, 0.0, 1.0] | None = None,
    ) -> None:
        """/juxtapose: queue a mirror layout of `left / right` (one prompt per side)."""
        origin = self.bot.jobs.enter(_origin(interaction))
        if len(split_regions(left)) > 1 or len(split_regions(right)) > 1:
            raise InvalidSpec("Each side is one prompt; leave out ' / ' (use | to add ideas to a side).")
        rules = await self.bot.community.settings(interaction.guild_id)
        spec = self._spec(
            rules,
            f"{left} / {right}",
            seed=seed,
            steps=steps,
            size=size,
            style=style,
            model=None,
            layout="mirror",
            tone_weight=symmetry,
            semantic_weight=semantic,
        )
        await self._submit(interaction, origin, spec)

    async def _start_tournament(
        self, interaction: discord.Interaction, origin: Origin, spec: JobSpec, candidates: int
    ) -> None:
        """Queue `candidates` seeds of `spec` for a short first stage, in one thread."""

        async def announce(tournament, ticket: Ticket) -> Posted:
            message = await _answer(
                interaction,
                f"Tournament · {candidates} seeds of {short(spec.prompt)} · {ticket.job.spec.steps} steps each, then "
                f"the chosen one to {spec.steps} · first look in ~{duration(ticket.eta)} "
                f"(#{ticket.job.id}-#{ticket.job.id + candidates - 1})",
                view=tournament_view(tournament.id, install=self.bot.jobs.install),
            )
            return Posted(message.id, await self._open_thread(interaction, message, ticket.job, spec))

        await self.bot.tournaments.start(
            origin,
            spec,
            candidates=candidates,
            first_steps=self.settings.tournament_steps,
            announce=announce,
        )

    def _spec(self, rules, prompt: str, **options) -> JobSpec:
        """The job a request's options describe, with this server's defaults (its limits are the gate's)."""
        return self.bot.catalog.spec(rules, prompt, default_steps=self.bot.community.default_steps(rules), **options)

    async def imagine_prompt(self, interaction: discord.Interaction, prompt: str) -> None:
        """/imagine `prompt` with the server's defaults, for a member who clicked a button proposing it (/describe's
        Imagine this): the same gate and queue as the command; refusals raise to the error handler."""
        origin = self.bot.jobs.enter(_origin(interaction))
        rules = await self.bot.community.settings(interaction.guild_id)
        spec = self._spec(rules, prompt, seed=None, steps=None, size=None, style=None, model=None)
        await self._submit(interaction, origin, spec)

    async def _submit(self, interaction: discord.Interaction, origin: Origin, spec: JobSpec) -> None:
        """Queue the job; it is announced with its place and ETA, in a thread of its own."""

        async def announce(ticket: Ticket) -> Posted:
            message = await _answer(
                interaction,
                queued_line(ticket.job, spec, ticket.eta, ticket.position),
                view=running_view(ticket.job.id, install=self.bot.jobs.install),
            )
            return Posted(message.id, await self._open_thread(interaction, message, ticket.job, spec))

        await self.bot.jobs.submit(origin, spec, announce=announce)

    @imagine.autocomplete("model")
    async def _model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=name, value=name)
            for name in self.bot.catalog.models()
            if current.lower() in name.lower()
        ][:25]

    async def _save_attachment(self, attachment: discord.Attachment, what: str) -> str:
        """Check an uploaded picture's declared size and type, then read it and let the job service check it
        completely and keep it (`JobService.keep_picture`); returns the name a spec reads it by."""
        if attachment.size > MAX_ATTACHMENT:
            raise InvalidSpec(f"The {what} is {attachment.size / 1024 / 1024:.0f} MB; the limit is 10 MB.")
        if attachment.content_type and not attachment.content_type.startswith("image/"):
            raise InvalidSpec(f"The {what} must be a picture (PNG, JPEG, WebP or GIF), not {attachment.content_type}.")
        data = await attachment.read()
        if len(data) > MAX_ATTACHMENT:  # the declared size was wrong
            raise InvalidSpec(f"The {what} is more than 10 MB; the limit is 10 MB.")
        return await self.bot.jobs.keep_picture(data, what)

    async def _open_thread(self, interaction: discord.Interaction, message, job, spec: JobSpec) -> int | None:
        channel = interaction.channel
        if interaction.guild_id is None or not isinstance(channel, discord.TextChannel):
            return None
        settings = await self.bot.jobs.settings(interaction.guild_id)
        if not settings.use_threads:
            return None
        try:
            name = one_line(f"#{job.id} {spec.prompt}", 90)  # plain text: no Markdown, no controls, no bidi tricks
            thread = await message.create_thread(name=name, auto_archive_duration=1440)
            return thread.id
        except discord.HTTPException as exc:  # no permission, too many active threads (160006), ...
            log.info("no thread for job %d (%s); posting in the channel", job.id, exc)
            return None

    # -- buttons' follow-ups ----------------------------------------------------------------------------------
    async def follow_up(self, interaction: discord.Interaction, parent_id: int, kind: str) -> None:
        """Queue a Reroll, Continue or Upscale of `parent_id` through the job service's gate (the cooldown and the
        server's rules of /imagine); limits and bad states answer the member ephemerally."""
        try:
            await self._follow_up(interaction, parent_id, kind)
        except (InvalidSpec, OutOfMemory, QueueFull) as exc:
            await reply(interaction, public_message(exc))

    async def _follow_up(self, interaction: discord.Interaction, parent_id: int, kind: str) -> None:
        parent = await self.bot.jobs.get_here(parent_id, interaction.guild_id, interaction.user.id)
        if parent is None:
            await interaction.response.send_message("That job no longer exists.", ephemeral=True)
            return
        spec = parent.spec
        if kind == "reroll":
            spec = reroll_spec(spec, random_seed())
        else:
            verb = "continue" if kind == "continue" else "upscale"
            if kind == "upscale":  # refused before anything is queued: BigGAN, 3 upscales already, too large
                spec = upscale_spec(spec, parent.steps_done, self.settings.upscale_steps)
            if not parent.snapshot_path:
                await interaction.response.send_message(
                    f"This image has no saved state to {verb} from; try Reroll instead.", ephemeral=True
                )
                return
            if kind == "continue":
                spec = continue_spec(spec, parent.steps_done, self.settings.continue_steps)
        label = {
            "reroll": "Reroll",
            "continue": f"Continue (+{self.settings.continue_steps} steps)",
            "upscale": f"Upscale to {'x'.join(map(str, spec.final_size))} (+{self.settings.upscale_steps} steps)",
        }[kind]

        async def announce(ticket: Ticket) -> Posted:
            await interaction.response.send_message(
                f"{label} of #{parent.id} → {queued_line(ticket.job, spec, ticket.eta, None)}"
            )
            return Posted((await interaction.original_response()).id)

        await self.bot.jobs.submit(
            _origin_of(interaction, parent),
            spec,
            kind=JobKind(kind),
            parent_id=parent.id,
            thread_id=parent.post_channel_id if parent.thread_id else None,
            announce=announce,
        )

    # -- branching ------------------------------------------------------------------------------------------
    async def branch_menu(self, interaction: discord.Interaction, job_id: int) -> None:
        """Show the saved states of a job (thumbnails with their steps, unless the output check flagged its picture)
        and a menu to branch from one."""
        if await self.button_throttled(interaction):
            return
        job = await self.bot.jobs.get_here(job_id, interaction.guild_id, interaction.user.id)
        saved = self.bot.jobs.snapshots(job_id) if job is not None and job.deleted_at is None else []
        if not saved:
            await interaction.response.send_message("This image has no saved states to branch from.", ephemeral=True)
            return
        shown = self.bot.jobs.shows_states(job)
        pictures = [(f"step {step}", thumb) for step, _, thumb in saved if thumb is not None and shown]
        files = []
        if pictures:
            sheet = await asyncio.to_thread(contact_sheet, pictures, 160)
            files.append(discord.File(io.BytesIO(sheet), filename=f"imagine-{job_id}-states.png"))
        await interaction.response.send_message(
            f"Saved states of #{job_id}: pick one to start a new job from it (you can change the prompt).",
            files=files,
            view=branch_view(job_id, [step for step, _, _ in saved]),
            ephemeral=True,
        )

    async def branch(self, interaction: discord.Interaction, parent_id: int, step: int, text: str) -> None:
        """Queue a new job that starts from `parent_id`'s state at `step`, aiming at `text` from there (through the job
        service's gate, as every job)."""
        try:
            await self._branch(interaction, parent_id, step, text.strip())
        except (InvalidSpec, QueueFull) as exc:
            await reply(interaction, public_message(exc))

    async def _branch(self, interaction: discord.Interaction, parent_id: int, step: int, text: str) -> None:
        parent = await self.bot.jobs.get_here(parent_id, interaction.guild_id, interaction.user.id)
        saved = {s: path for s, path, _ in self.bot.jobs.snapshots(parent_id)} if parent is not None else {}
        if step not in saved:
            await interaction.response.send_message("That saved state is no longer kept.", ephemeral=True)
            return
        spec = parent.spec
        schedule = tuple(entry for entry in spec.prompt_schedule if entry[0] < step)
        if text != spec.prompt_at(step):
            schedule = (*schedule, (step, text))
        spec = spec.replace(prompt_schedule=schedule)
        if step >= spec.total_steps:  # from the end: run on as Continue does (the last stage grows)
            spec = continue_spec(spec, step, self.settings.continue_steps)

        async def announce(ticket: Ticket) -> Posted:
            await interaction.response.send_message(
                f"Branch of #{parent.id} from step {step} → {queued_line(ticket.job, spec, ticket.eta, None)}"
            )
            return Posted((await interaction.original_response()).id)

        await self.bot.jobs.submit(
            _origin_of(interaction, parent),
            spec,
            kind=JobKind.BRANCH,
            parent_id=parent.id,
            thread_id=parent.post_channel_id if parent.thread_id else None,
            resume_from=saved[step],
            announce=announce,
        )

    # -- /queue /history /top -------------------------------------------------------------------------------
    @app_commands.command(name="queue", description="What is being painted now and what is waiting")
    async def queue(self, interaction: discord.Interaction) -> None:
        """/queue: the running jobs with their steps, then the waiting line with ETAs, to the member only."""
        jobs = self.bot.jobs
        lines = []
        here = interaction.guild_id, interaction.user.id
        for info in jobs.running():
            if not jobs.shows_in(info.job_id, *here, info.author_id):
                continue
            lines.append(f"▶️ #{info.job_id} · <@{info.author_id}> · step {info.step}/{info.steps}")
        etas = jobs.etas()
        for position, entry in enumerate(jobs.queue.order(), 1):
            if not jobs.shows_in(entry.job_id, *here, entry.user_id):
                continue  # its place is still counted: the line is shared by every server
            eta = etas.get(entry.job_id, 0.0)
            lines.append(f"{position}. #{entry.job_id} · <@{entry.user_id}> · ETA ~{duration(eta)}")
        text = "\n".join(lines) if lines else "Nothing is running and nobody is waiting. `/imagine` something!"
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="history", description="Your recent images")
    async def history(self, interaction: discord.Interaction) -> None:
        """/history: the member's ten latest jobs here, with state and link, to the member only."""
        jobs = await self.bot.jobs.history(interaction.guild_id, interaction.user.id, limit=10)
        if not jobs:
            await interaction.response.send_message("You have not made any images here yet.", ephemeral=True)
            return
        lines = []
        for job in jobs:
            spec = job.spec
            link = jump_url(job.guild_id, job.post_channel_id, job.result_message_id or job.status_message_id)
            where = f" · {link}" if link else ""
            lines.append(f"#{job.id} · {job.state.value} · {short(spec.prompt, 80)}{where}")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="top", description="The best images of this server, by votes or by CLIP score")
    @app_commands.describe(period="This week or all time", by="Rank by members' votes or by CLIP score")
    async def top(
        self,
        interaction: discord.Interaction,
        period: Literal["week", "all time"] = "week",
        by: Literal["votes", "score"] = "votes",
    ) -> None:
        """/top: the ten best images of the week or of all time, by votes or by CLIP score."""
        since = time.time() - 7 * 86400 if period == "week" else 0.0
        # in DMs, only the member's own images: other members' DM prompts are theirs alone
        entries = await self.bot.jobs.top(
            interaction.guild_id, since=since, limit=10, by=by, author_id=interaction.user.id
        )
        await interaction.response.send_message(
            embed=top_embed(entries, period, by), allowed_mentions=discord.AllowedMentions.none()
        )
