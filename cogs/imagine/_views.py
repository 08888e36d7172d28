"""Buttons that survive restarts: the job id lives in the custom_id, everything else in the database.

A custom_id also carries the database's install token (`imagine:reroll:12:3f9a0c11be`): after the database is
deleted or replaced, ids start again and name other jobs, so a button whose token is not this database's is
refused instead of acting on someone else's job. Token-less buttons (posted before tokens) work only with the
database they came from (one upgraded in place, see storage migration 003)."""

from __future__ import annotations

import functools
import re

import discord

from cogs.errors import Modal, View, handle
from cogs.imagine._embeds import recipe_text, short
from engine.errors import InvalidSpec


def _may_moderate(interaction: discord.Interaction) -> bool:
    perms = getattr(interaction.user, "guild_permissions", None)
    return bool(perms and perms.manage_messages)


STALE_BUTTON = "This button belongs to an image from an earlier database of this bot; it no longer works."
_INSTALL = r"(?::(?P<install>[0-9a-f]+))?"


class _Guarded:
    """Refuses a button whose install token is not the current database's (see the module docstring), and sends its
    callback's errors to the one error handler (discord.py only logs a persistent button's errors)."""

    install: str | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        callback = cls.__dict__.get("callback")
        if callback is not None:

            @functools.wraps(callback)
            async def answered(self, interaction: discord.Interaction) -> None:
                try:
                    await callback(self, interaction)
                except Exception as exc:  # every error gets the member a sentence
                    await handle(interaction, exc, f"button {cls.__name__}")

            cls.callback = answered

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.client.jobs.accepts(self.install):
            return True
        await interaction.response.send_message(STALE_BUTTON, ephemeral=True)
        return False


class _FromJobId(_Guarded):
    """Rebuild a job button from its custom_id after a restart: the job id (and the token) is all it carries."""

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        return cls(int(match["job"]), install=match["install"])


async def _active_job(interaction: discord.Interaction, job_id: int):
    """The job if it is still waiting or running (and of this server); otherwise say so to the member and return
    None."""
    job = await _job_here(interaction, job_id)
    if job is None or not job.state.active:
        await interaction.response.send_message("This job has already ended.", ephemeral=True)
        return None
    return job


async def _job_here(interaction: discord.Interaction, job_id: int):
    """The job a button names, if it belongs where the button was clicked (see `JobService.get_here`)."""
    return await interaction.client.jobs.get_here(job_id, interaction.guild_id, interaction.user.id)


def custom_id(action: str, item_id: int, install: str | None) -> str:
    """A button's custom_id, `imagine:<action>:<id>`, ending in `:<install>` when there is a token."""
    return f"imagine:{action}:{item_id}" + (f":{install}" if install else "")


def _button(action: str, job_id: int, label: str, style, emoji: str | None = None, install: str | None = None):
    return discord.ui.Button(label=label, style=style, emoji=emoji, custom_id=custom_id(action, job_id, install))


class CancelButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:cancel:(?P<job>\d+){_INSTALL}"
):
    """Cancel a waiting or running job (its author or a moderator)."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("cancel", job_id, "Cancel", discord.ButtonStyle.danger, install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Cancel the job if it is still active and the member is its author or a moderator."""
        bot = interaction.client
        job = await _active_job(interaction, self.job_id)
        if job is None:
            return
        if interaction.user.id != job.author_id and not _may_moderate(interaction):
            await interaction.response.send_message(
                "Only the member who asked for this image (or a moderator) can cancel it.", ephemeral=True
            )
            return
        await interaction.response.send_message(f"Cancelling #{job.id}…", ephemeral=True)
        await bot.jobs.cancel(job.id)


class SteerModal(Modal, title="Steer this picture"):
    """A new prompt for a running job; it takes effect at the next step."""

    prompt = discord.ui.TextInput(
        label="New prompt (from the next step on)",
        style=discord.TextStyle.paragraph,
        max_length=1000,
        custom_id="prompt",
    )

    def __init__(self, job_id: int, current: str) -> None:
        super().__init__(timeout=600)
        self.job_id = job_id
        self.prompt.default = current

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Check the text as the job's next prompt, then steer the running job to it; the change is announced in the
        channel, refusals go to the member only."""
        bot = interaction.client
        text = self.prompt.value.strip()
        if await bot.get_cog("Imagine").button_throttled(interaction):
            return
        job = await _active_job(interaction, self.job_id)
        if job is None:
            return
        spec = job.spec
        try:  # check the prompt before it reaches the engine
            later = max([job.steps_done, *(step for step, _ in spec.prompt_schedule)]) + 1
            spec.replace(prompt_schedule=(*spec.prompt_schedule, (later, text)))
        except InvalidSpec as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        try:
            steered = await bot.jobs.steer(self.job_id, text)
        except InvalidSpec as exc:  # a blocked word: the sentence does not repeat it
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        if steered is None:
            await interaction.response.send_message(
                "This job is not running right now (still waiting, or just finishing); try again in a moment.",
                ephemeral=True,
            )
            return
        step = steered.prompt_schedule[-1][0]
        await interaction.response.send_message(f"🧭 #{job.id} now aims at **{short(text, 200)}** from step {step}.")


class SteerButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:steer:(?P<job>\d+){_INSTALL}"
):
    """Change the prompt of a running job from its next step (its author only)."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("steer", job_id, "Steer", discord.ButtonStyle.secondary, "🧭", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Open the Steer modal, filled with the current prompt, for the author of a job still active."""
        job = await _active_job(interaction, self.job_id)
        if job is None:
            return
        if interaction.user.id != job.author_id:
            await interaction.response.send_message(
                "Only the member who asked for this image can steer it.", ephemeral=True
            )
            return
        spec = job.spec
        await interaction.response.send_modal(SteerModal(job.id, spec.prompt_at(job.steps_done)))


class RerollButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:reroll:(?P<job>\d+){_INSTALL}"
):
    """A new job with the same settings and a new seed."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("reroll", job_id, "Reroll", discord.ButtonStyle.primary, "🎲", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Queue a Reroll of the job through the Imagine cog."""
        await interaction.client.get_cog("Imagine").follow_up(interaction, self.job_id, "reroll")


class ContinueButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:continue:(?P<job>\d+){_INSTALL}"
):
    """A new job that goes on from the final state for more steps."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("continue", job_id, "Continue", discord.ButtonStyle.secondary, "⏩", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Queue a Continue of the job through the Imagine cog."""
        await interaction.client.get_cog("Imagine").follow_up(interaction, self.job_id, "continue")


class UpscaleButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:upscale:(?P<job>\d+){_INSTALL}"
):
    """A new job from the final state at twice the size (the cog refuses what cannot be upscaled)."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("upscale", job_id, "Upscale", discord.ButtonStyle.secondary, "🔍", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Queue an Upscale of the job through the Imagine cog."""
        await interaction.client.get_cog("Imagine").follow_up(interaction, self.job_id, "upscale")


class BranchButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:branch:(?P<job>\d+){_INSTALL}"
):
    """Start a new job from one of a job's saved states."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("branch", job_id, "Branch", discord.ButtonStyle.secondary, "🌿", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show the job's saved states and the menu to branch from one (the Imagine cog's `branch_menu`)."""
        await interaction.client.get_cog("Imagine").branch_menu(interaction, self.job_id)


class BranchModal(Modal, title="Branch from here"):
    """The prompt for the new branch (as it was at that step: change it to take the run elsewhere)."""

    prompt = discord.ui.TextInput(
        label="Prompt from this step on", style=discord.TextStyle.paragraph, max_length=1000, custom_id="prompt"
    )

    def __init__(self, job_id: int, step: int, current: str) -> None:
        super().__init__(timeout=600)
        self.job_id, self.step = job_id, step
        self.prompt.default = current

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Queue the branch from the chosen step with the prompt entered, through the Imagine cog."""
        await interaction.client.get_cog("Imagine").branch(interaction, self.job_id, self.step, self.prompt.value)


class BranchSelect(discord.ui.Select):
    """The menu of a job's saved steps to branch from (the newest 25, a menu's limit)."""

    def __init__(self, job_id: int, steps: list[int]) -> None:
        options = [discord.SelectOption(label=f"Step {s}", value=str(s)) for s in steps[-25:]]
        super().__init__(
            placeholder="Branch from which step?", options=options, custom_id=f"imagine:branchpick:{job_id}"
        )
        self.job_id = job_id

    async def callback(self, interaction: discord.Interaction) -> None:
        """Open the Branch modal for the chosen step, filled with the prompt the job had at that step."""
        step = int(self.values[0])
        job = await _job_here(interaction, self.job_id)
        if job is None:
            await interaction.response.send_message("That job no longer exists.", ephemeral=True)
            return
        spec = job.spec
        await interaction.response.send_modal(BranchModal(job.id, step, spec.prompt_at(step)))


def branch_view(job_id: int, steps: list[int]) -> discord.ui.View:
    """A view with the branch menu of `job_id`'s saved steps (not persistent: it times out in ten minutes)."""
    view = View(timeout=600)
    view.add_item(BranchSelect(job_id, steps))
    return view


NUMBER_EMOJI = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣")


class PickButton(
    _Guarded,
    discord.ui.DynamicItem[discord.ui.Button],
    template=rf"imagine:pick:(?P<tournament>\d+):(?P<number>\d){_INSTALL}",
):
    """Continue candidate `number` of a tournament (its author decides)."""

    def __init__(self, tournament_id: int, number: int, install: str | None = None) -> None:
        action = f"pick:{tournament_id}"
        super().__init__(
            discord.ui.Button(
                label=str(number), style=discord.ButtonStyle.primary, custom_id=custom_id(action, number, install)
            )
        )
        self.tournament_id, self.number, self.install = tournament_id, number, install

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        """Rebuild the button from its custom_id: tournament, candidate number and token."""
        return cls(int(match["tournament"]), int(match["number"]), install=match["install"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Continue this candidate, for the tournament's author while the tournament is voting."""
        bot = interaction.client
        tournament = await bot.tournaments.get(self.tournament_id)
        if tournament is None or tournament.state != "voting":
            await interaction.response.send_message("This tournament has already been decided.", ephemeral=True)
            return
        if interaction.user.id != tournament.author_id:
            await interaction.response.send_message(
                "Only the member who started this tournament picks; vote with the number reactions.", ephemeral=True
            )
            return
        decided = await bot.tournaments.decide(self.tournament_id, self.number, "author")
        said = f"Candidate {self.number} goes on…" if decided else "This tournament has already been decided."
        await interaction.response.send_message(said, ephemeral=True)


class CancelTournamentButton(
    _Guarded, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:tcancel:(?P<tournament>\d+){_INSTALL}"
):
    """Stop every candidate of a tournament that has not ended (its author or a moderator)."""

    def __init__(self, tournament_id: int, install: str | None = None) -> None:
        super().__init__(_button("tcancel", tournament_id, "Cancel", discord.ButtonStyle.danger, install=install))
        self.tournament_id, self.install = tournament_id, install

    @classmethod
    async def from_custom_id(cls, interaction, item, match: re.Match[str]):
        """Rebuild the button from its custom_id: tournament and token."""
        return cls(int(match["tournament"]), install=match["install"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Cancel every candidate still active, while the first stage runs (its author or a moderator)."""
        bot = interaction.client
        tournament = await bot.tournaments.get(self.tournament_id)
        if tournament is None or tournament.guild_id != interaction.guild_id or tournament.state != "running":
            await interaction.response.send_message("This tournament's first stage is over.", ephemeral=True)
            return
        if interaction.user.id != tournament.author_id and not _may_moderate(interaction):
            await interaction.response.send_message(
                "Only the member who started this tournament (or a moderator) can cancel it.", ephemeral=True
            )
            return
        await interaction.response.send_message("Cancelling the tournament…", ephemeral=True)
        for job in await bot.tournaments.candidates(self.tournament_id):
            if job.state.active:
                await bot.jobs.cancel(job.id)


def tournament_view(tournament_id: int, *, install: str) -> discord.ui.View:
    """The persistent view of a tournament's announcement: its Cancel button."""
    view = View(timeout=None)
    view.add_item(CancelTournamentButton(tournament_id, install))
    return view


def pick_view(tournament_id: int, numbers: list[int], *, install: str) -> discord.ui.View:
    """The persistent view of a tournament's grid: one pick button per candidate number."""
    view = View(timeout=None)
    for number in numbers:
        view.add_item(PickButton(tournament_id, number, install))
    return view


class RecipeButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:recipe:(?P<job>\d+){_INSTALL}"
):
    """Show a job's recipe to the member who clicks."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("recipe", job_id, "Recipe", discord.ButtonStyle.secondary, "📜", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Reply (to the member only) with the job's recipe, and its gallery link where the gallery shows it."""
        job = await _job_here(interaction, self.job_id)
        if job is None:
            await interaction.response.send_message("That job no longer exists.", ephemeral=True)
            return
        if job.moderation == "withhold" or job.deleted_at is not None:  # its recipe would make it again
            await interaction.response.send_message(
                "This image was withheld or deleted; its recipe is not shown.", ephemeral=True
            )
            return
        text = recipe_text(job, job.spec)
        url = interaction.client.settings.gallery_url
        shown = job.guild_id is not None and job.deleted_at is None and job.moderation in (None, "post")
        if url and shown and (await interaction.client.community.settings(job.guild_id)).gallery:
            text += f"\nIn the gallery: {url}/i/{job.id}"
        await interaction.response.send_message(text, ephemeral=True)


class DeleteButton(
    _FromJobId, discord.ui.DynamicItem[discord.ui.Button], template=rf"imagine:delete:(?P<job>\d+){_INSTALL}"
):
    """Delete an image: for its author and members who can manage messages."""

    def __init__(self, job_id: int, install: str | None = None) -> None:
        super().__init__(_button("delete", job_id, "Delete", discord.ButtonStyle.danger, "🗑️", install=install))
        self.job_id, self.install = job_id, install

    async def callback(self, interaction: discord.Interaction) -> None:
        """Ask the job service to delete the image and reply with its sentence, to the member only."""
        jobs, user = interaction.client.jobs, interaction.user
        text = await jobs.delete(self.job_id, user.id, _may_moderate(interaction), interaction.guild_id)
        await interaction.response.send_message(text, ephemeral=True)


DYNAMIC_ITEMS = (
    DeleteButton,
    CancelButton,
    SteerButton,
    RerollButton,
    ContinueButton,
    UpscaleButton,
    BranchButton,
    RecipeButton,
    PickButton,
    CancelTournamentButton,
)


def running_view(job_id: int, steer: bool = False, *, install: str) -> discord.ui.View:
    """Cancel (and Steer, on the status message of a running job)."""
    view = View(timeout=None)
    view.add_item(CancelButton(job_id, install))
    if steer:
        view.add_item(SteerButton(job_id, install))
    return view


def result_view(job_id: int, *, install: str) -> discord.ui.View:
    """The persistent buttons under a result: Reroll, Continue, Upscale, Branch, Recipe and Delete."""
    view = View(timeout=None)
    for kind in (RerollButton, ContinueButton, UpscaleButton, BranchButton, RecipeButton, DeleteButton):
        view.add_item(kind(job_id, install))
    return view
