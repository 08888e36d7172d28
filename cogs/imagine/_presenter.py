"""The job service's presenter for Discord: status messages, paced progress edits, the final post."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path

import discord
from PIL import Image

from bot.jobs import Job, JobKind
from bot.timelapse import Timelapse, make_mp4, make_timelapse
from bot.tournaments import Tournament, is_choosable, is_withheld
from cogs.imagine._audience import audience
from cogs.imagine._embeds import duration, jump_url, result_embed, short, status_embed
from cogs.imagine._grid import contact_sheet
from cogs.imagine._pacing import EditPacer
from cogs.imagine._views import NUMBER_EMOJI, custom_id, pick_view, result_view, running_view
from engine.events import Progress, Result

log = logging.getLogger(__name__)

VOTE_EMOJI = ("👍", "👎")
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
SPARK_POINTS = 24
RESULT_SEARCH = 100  # recent messages of a job's thread searched for a result posted before a stop
STATUS_MAX_AGE = 50 * 60  # Discord refuses many edits to messages older than an hour (30046): post a fresh one


def author_only(author_id: int) -> discord.AllowedMentions:
    """Ping the job's author and nobody else, whatever the prompt in the same message says."""
    return discord.AllowedMentions(everyone=False, users=[discord.Object(author_id)], roles=False, replied_user=False)


def fit_upload(png: bytes, limit: int) -> tuple[bytes, str]:
    """The image as PNG if it fits the upload limit, else as WebP at falling quality."""
    if len(png) <= limit:
        return png, "png"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for quality in (95, 85, 70, 50):
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=quality)
        if out.tell() <= limit:
            return out.getvalue(), "webp"
    raise ValueError("the image does not fit the upload limit even as WebP")


def animation_files(job_id: int, result: Result, room: int, spoiler: bool) -> tuple[list[discord.File], str]:
    """An animation's MP4 fitted into `room` bytes (lower bit rate, then smaller) and its looping preview where it
    still fits, as files to attach, with the sentence to add to the post ("" when nothing was given up)."""
    from engine.video import VideoError, fit_mp4

    files: list[discord.File] = []
    try:
        fitted = fit_mp4(result.video, room)
    except VideoError as exc:
        log.warning("the video of job %d could not be fitted: %s", job_id, exc)
        return [], "Its video could not be prepared for Discord; the last frame is attached"
    if fitted.data is None:
        return [], fitted.note or "Its video does not fit this server's upload limit; the last frame is attached"
    files.append(discord.File(io.BytesIO(fitted.data), filename=f"imagine-{job_id}.mp4", spoiler=spoiler))
    preview = result.preview_animation
    if preview is not None and len(preview) <= room - len(fitted.data):
        files.append(discord.File(io.BytesIO(preview), filename=f"imagine-{job_id}-loop.webp", spoiler=spoiler))
    return files, fitted.note


class DiscordPresenter:
    """Shows jobs in their threads. Edits go out at most every `interval` seconds per job and within a shared
    budget per channel, and only the newest preview is ever sent (older ones are dropped, not queued)."""

    def __init__(self, bot, interval: float = 5.0) -> None:
        self.bot = bot
        self.pacer = EditPacer(interval=interval)
        self._inflight: dict[int, asyncio.Task] = {}
        self._status_born: dict[int, float] = {}
        self._similarity: dict[int, list[tuple[float, ...]]] = {}  # job id -> similarities per report
        self._prompt: dict[int, str] = {}

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _channel(self, channel_id: int):
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            channel = await self.bot.fetch_channel(channel_id)
        if isinstance(channel, discord.Thread) and channel.archived:
            await channel.edit(archived=False)
        return channel

    async def job_started(self, job: Job) -> int | None:
        """Edit the job's status message to Starting, or post one if it has none (or it is gone); returns its id. None
        for a tournament candidate."""
        if job.kind == JobKind.CANDIDATE:  # a tournament shows its candidates together, in one grid at the end
            return None
        spec = job.spec
        channel = await self._channel(job.post_channel_id)
        if job.status_message_id is not None:
            try:
                message = await channel.fetch_message(job.status_message_id)
                await message.edit(
                    embed=status_embed(job, spec, None, state="starting"),
                    view=running_view(job.id, steer=True, install=self.bot.jobs.install),
                )
                self._status_born.setdefault(job.id, self._now())
                return message.id
            except discord.NotFound:
                pass
        message = await channel.send(
            embed=status_embed(job, spec, None, state="starting"),
            view=running_view(job.id, steer=True, install=self.bot.jobs.install),
        )
        self._status_born[job.id] = self._now()
        return message.id

    async def job_progress(self, job: Job, progress: Progress) -> None:
        """Keep the report's CLIP similarities for the sparklines, then edit the status with the preview if the pacer
        allows. A flagged preview, or one that comes while an edit is in flight, is dropped."""
        if progress.similarities:
            history = self._similarity.setdefault(job.id, [])
            if (
                history
                and len(history[-1]) != len(progress.similarities)
                or self._prompt.get(job.id) != progress.prompt
            ):
                history.clear()  # steered: a new set of prompts
            self._prompt[job.id] = progress.prompt
            history.append(progress.similarities)
            del history[:-SPARK_POINTS]
        if job.status_message_id is None or progress.preview is None:
            return  # a preview the output check did not pass never gets here (the job service drops it)
        if job.id in self._inflight and not self._inflight[job.id].done():
            return  # an edit is still on its way: drop this one, the next will carry a newer preview
        if not self.pacer.allow(job.post_channel_id, job.status_message_id, self._now()):
            return
        self._inflight[job.id] = asyncio.create_task(self._edit_status(job, progress))

    async def _edit_status(self, job: Job, progress: Progress) -> None:
        spec = job.spec
        embed = status_embed(job, spec, progress, history=self._similarity.get(job.id))
        file = discord.File(io.BytesIO(progress.preview), filename="preview.png")
        try:
            channel = await self._channel(job.post_channel_id)
            if self._now() - self._status_born.get(job.id, self._now()) > STATUS_MAX_AGE:
                old = channel.get_partial_message(job.status_message_id)
                await old.edit(attachments=[], view=None)  # the newest preview goes on the new message only
                message = await channel.send(
                    embed=embed, file=file, view=running_view(job.id, steer=True, install=self.bot.jobs.install)
                )
                self._status_born[job.id] = self._now()
                self._count_edit(sent=True)
                await self.bot.jobs.record_status(job.id, message.id)
                return
            await channel.get_partial_message(job.status_message_id).edit(
                embed=embed, attachments=[file], view=running_view(job.id, steer=True, install=self.bot.jobs.install)
            )
            self._count_edit(sent=True)
        except discord.HTTPException as exc:
            self._count_edit(sent=False)
            log.warning("status edit of job %d failed: %s", job.id, exc)

    def _count_edit(self, sent: bool) -> None:
        metrics = getattr(self.bot, "metrics", None)  # bot.metrics.Metrics of an ImagineBot
        if metrics is not None:
            metrics.preview_edit(sent)

    async def _settle_status(self, job: Job, state: str, progress: Progress | None = None) -> None:
        task = self._inflight.pop(job.id, None)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if job.status_message_id is None:
            return
        fresh = await self.bot.jobs.get(job.id)  # its status message may have been replaced meanwhile
        spec = job.spec
        try:
            channel = await self._channel(job.post_channel_id)
            await channel.get_partial_message(fresh.status_message_id).edit(
                embed=status_embed(fresh, spec, None, state=state), attachments=[], view=None
            )
        except discord.HTTPException as exc:
            log.warning("final status edit of job %d failed: %s", job.id, exc)
        self.pacer.forget(job.status_message_id)
        if fresh is not None and fresh.status_message_id != job.status_message_id:  # a replaced status (long runs)
            self.pacer.forget(fresh.status_message_id)
        self._similarity.pop(job.id, None)
        self._prompt.pop(job.id, None)
        self._status_born.pop(job.id, None)

    async def job_finished(self, job: Job, result: Result, image_bytes: bytes) -> int | None:
        """Close the status and post the result with its buttons (spoilered, or withheld with a note, as the output
        check decided); returns the message id. None for a tournament candidate."""
        if job.kind == JobKind.CANDIDATE:
            return None
        await self._settle_status(job, "done")
        spec = job.spec
        channel = await self._channel(job.post_channel_id)
        view = result_view(job.id, install=self.bot.jobs.install)
        if job.moderation == "withhold":  # the image stays on the bot's disk; nothing of it is shown
            message = await channel.send(
                content=f"<@{job.author_id}> #{job.id} is finished but withheld: this server's output check "
                "flagged it. Try Reroll or another prompt.",
                view=view,
                allowed_mentions=author_only(job.author_id),
            )
            await self._link_from_channel(job, f"Withheld #{job.id} · {short(spec.prompt)}")
            return message.id
        limit = getattr(getattr(channel, "guild", None), "filesize_limit", DEFAULT_UPLOAD_LIMIT)
        data, ext = fit_upload(image_bytes, limit)
        spoiler = job.moderation == "spoiler"  # an embed's image cannot be hidden: a spoilered attachment only
        file = discord.File(io.BytesIO(data), filename=f"imagine-{job.id}.{ext}", spoiler=spoiler)
        embed = result_embed(job, spec, result, None if spoiler else file.filename)
        note = " (flagged by this server's output check: shown as a spoiler)" if spoiler else ""
        files, what = [file], "image"
        if result.video is not None:  # an animation: its video (and looping preview) beside its last frame
            extra, fitted = await asyncio.to_thread(animation_files, job.id, result, limit - len(data), spoiler)
            files, what = [file, *extra], f"animation ({result.frames_done} frames)"
            note += f". {fitted}" if fitted else ""
        message = await channel.send(
            content=f"<@{job.author_id}> your {what} is ready{note}.",
            embed=embed,
            files=files,
            view=view,
            allowed_mentions=author_only(job.author_id),
        )
        await self._complete_post(job, message)
        return message.id

    async def find_result(self, job: Job) -> int | None:
        """Look among the recent messages of the job's channel for a result already posted (by its Reroll button's
        custom_id); if found, complete it as a new post would and return its id."""
        if job.kind == JobKind.CANDIDATE:
            return None
        wanted = custom_id("reroll", job.id, self.bot.jobs.install)
        channel = await self._channel(job.post_channel_id)
        async for message in channel.history(limit=RESULT_SEARCH):
            if message.author.id == self.bot.user.id and any(
                getattr(child, "custom_id", None) == wanted for row in message.components for child in row.children
            ):
                await self._settle_status(job, "done")
                await self._complete_post(job, message)
                return message.id
        return None

    async def _complete_post(self, job: Job, message: discord.Message) -> None:
        """Record who could see the result where it was posted (the web gallery shows only what everyone could), seed
        the vote reactions on it and link to it from the channel (all safe to repeat)."""
        seen_by = audience(message.channel)
        await self.bot.jobs.record_audience(job.id, seen_by.who, seen_by.channel_id)
        for emoji in VOTE_EMOJI:
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException as exc:
                log.warning("could not seed vote reactions on job %d: %s", job.id, exc)
                break
        spec = job.spec
        await self._link_from_channel(
            job, f"Done #{job.id} · {short(spec.prompt)} · {jump_url(job.guild_id, job.post_channel_id, message.id)}"
        )

    async def job_timelapse(self, job: Job, frames: list[Path], final_png: bytes) -> tuple[int, Timelapse] | None:
        """Post the run's timelapse (WebP or GIF, plus an MP4 where ffmpeg is installed and it fits); returns the
        message id and the animation. None for a candidate or when nothing fits."""
        if job.kind == JobKind.CANDIDATE:
            return None
        channel = await self._channel(job.post_channel_id)
        limit = getattr(getattr(channel, "guild", None), "filesize_limit", DEFAULT_UPLOAD_LIMIT)
        made = await asyncio.to_thread(make_timelapse, frames, limit, final_png)
        if made is None:
            return None
        files = [discord.File(io.BytesIO(made.data), filename=f"imagine-{job.id}-timelapse.{made.ext}")]
        mp4 = await asyncio.to_thread(make_mp4, frames, limit - len(made.data), final_png)
        if mp4 is not None:
            files.append(discord.File(io.BytesIO(mp4.data), filename=f"imagine-{job.id}-timelapse.mp4"))
        message = await channel.send(f"Timelapse of #{job.id} · {made.frames} frames", files=files)
        return message.id, made

    async def job_by_dm(self, job: Job, image_bytes: bytes) -> None:
        """Send the image to its author by DM; if their DMs are closed, say so in the job's channel."""
        user = self.bot.get_user(job.author_id) or await self.bot.fetch_user(job.author_id)
        data, ext = fit_upload(image_bytes, DEFAULT_UPLOAD_LIMIT)
        try:
            await user.send(
                f"Your image #{job.id} · {short(job.spec.prompt, 200)} · "
                f"{jump_url(job.guild_id, job.post_channel_id, job.result_message_id)}",
                file=discord.File(io.BytesIO(data), filename=f"imagine-{job.id}.{ext}"),
            )
        except discord.Forbidden:  # DMs closed to this server's members (or the bot blocked)
            channel = await self._channel(job.post_channel_id)
            await channel.send(
                f"<@{job.author_id}> I could not send #{job.id} by DM: your DMs are closed to me. Open them in "
                "this server's privacy settings, or turn DM delivery off with `/settings me dm:False`.",
                allowed_mentions=author_only(job.author_id),
            )

    async def job_deleted(self, job: Job) -> None:
        """Delete the job's result and timelapse messages and say so in its queued message."""
        channel = await self._channel(job.post_channel_id)
        for message_id in (job.result_message_id, job.timelapse_message_id):
            if message_id is not None:
                try:
                    await channel.get_partial_message(message_id).delete()
                except discord.NotFound:
                    pass
        await self._link_from_channel(job, f"Deleted #{job.id}")

    async def job_failed(self, job: Job, message: str) -> None:
        """Close the status and say in the channel that the job failed and why (a candidate's failure is only
        logged)."""
        if job.kind == JobKind.CANDIDATE:
            log.warning("candidate job %d failed: %s", job.id, message)
            return
        await self._settle_status(job, "failed")
        channel = await self._channel(job.post_channel_id)
        await channel.send(f"❌ #{job.id} failed: {message}")
        spec = job.spec
        await self._link_from_channel(job, f"Failed #{job.id} · {short(spec.prompt)}")

    async def job_cancelled(self, job: Job, result: Result | None) -> None:
        """Close the status and say the job was cancelled, with the image it reached unless the output check flagged it.
        Nothing for a candidate."""
        if job.kind == JobKind.CANDIDATE:
            return
        await self._settle_status(job, "cancelled")
        channel = await self._channel(job.post_channel_id)
        if result is not None and job.moderation not in (None, "post"):
            await channel.send(f"#{job.id} was cancelled at step {result.steps_done}; its image was flagged.")
        elif result is not None:
            files = [discord.File(io.BytesIO(result.image), filename=f"imagine-{job.id}-cancelled.png")]
            made = f" (frame {result.frames_done} of {job.spec.animation.frames})" if job.spec.animation else ""
            if result.video is not None:  # Cancel keeps the frames an animation made
                limit = getattr(getattr(channel, "guild", None), "filesize_limit", DEFAULT_UPLOAD_LIMIT)
                extra, _ = await asyncio.to_thread(animation_files, job.id, result, limit - len(result.image), False)
                files += extra
            await channel.send(
                f"#{job.id} was cancelled at step {result.steps_done}{made}. Here is where it got to:", files=files
            )
        else:
            await channel.send(f"#{job.id} was cancelled before it started.")
        spec = job.spec
        await self._link_from_channel(job, f"Cancelled #{job.id} · {short(spec.prompt)}")

    async def _link_from_channel(self, job: Job, text: str) -> None:
        """Edit the "Queued #N" message in the channel so that it links to the outcome."""
        if job.queued_message_id is None:
            return
        try:
            channel = await self._channel(
                job.channel_id if job.thread_id is None or job.kind == "new" else job.thread_id
            )
            await channel.get_partial_message(job.queued_message_id).edit(content=text, view=None)
        except discord.HTTPException as exc:
            log.info("could not update the queued message of job %d: %s", job.id, exc)

    # -- tournaments ----------------------------------------------------------------------------------------
    async def tournament_ready(self, tournament: Tournament, candidates: list[Job]) -> int:
        """Post the finished candidates' contact sheet with the pick buttons and seed the number reactions; returns the
        message id."""
        channel = await self._channel(tournament.thread_id or tournament.channel_id)
        finished = [c for c in candidates if is_choosable(c) and c.image_path]  # a withheld candidate is never shown
        items = [(f"{c.candidate} · CLIP {c.score or 0:.3f}", Path(c.image_path)) for c in finished]
        sheet = await asyncio.to_thread(contact_sheet, items, 256)
        numbers = [c.candidate for c in finished]
        wait = max(0, round((tournament.decide_at or 0) - time.time()))
        spec = tournament.spec
        hidden = sum(is_withheld(c) for c in candidates)
        note = f" ({hidden} withheld by this server's output check)" if hidden else ""
        spoiler = any(c.moderation == "spoiler" for c in finished)  # one flagged tile hides the whole sheet
        message = await channel.send(
            f"<@{tournament.author_id}> the candidates of **{short(spec.prompt, 200)}** after their first "
            f"{candidates[0].spec.steps} steps{note}. Vote with the number reactions; the author "
            f"picks with a button, or in {duration(wait)} the most voted (then the best scoring) goes on to "
            f"{spec.steps} steps.",
            file=discord.File(io.BytesIO(sheet), filename=f"tournament-{tournament.id}.png", spoiler=spoiler),
            view=pick_view(tournament.id, numbers, install=self.bot.jobs.install),
            allowed_mentions=author_only(tournament.author_id),
        )
        for number in numbers:
            try:
                await message.add_reaction(NUMBER_EMOJI[number - 1])
            except discord.HTTPException as exc:
                log.warning("could not seed number reactions on tournament %d: %s", tournament.id, exc)
                break
        return message.id

    async def tournament_votes(self, tournament: Tournament) -> dict[int, int]:
        """Members' number reactions on the grid, per candidate ({} if the grid is gone)."""
        if tournament.grid_message_id is None:
            return {}
        channel = await self._channel(tournament.thread_id or tournament.channel_id)
        try:
            message = await channel.fetch_message(tournament.grid_message_id)
        except discord.HTTPException:
            return {}
        votes = {}
        for reaction in message.reactions:
            if str(reaction.emoji) in NUMBER_EMOJI:  # members' reactions only: bots (this one included) never vote
                voters = [user async for user in reaction.users() if not user.bot]
                votes[NUMBER_EMOJI.index(str(reaction.emoji)) + 1] = len(voters)
        return votes

    async def tournament_decided(self, tournament: Tournament, winner: Job, job: Job) -> None:
        """Take the buttons off the grid and say which candidate goes on, why, and as which job."""
        channel = await self._channel(tournament.thread_id or tournament.channel_id)
        why = {"author": "picked by the author", "votes": "most votes", "score": "best CLIP score"}.get(
            tournament.decided_by or "", tournament.decided_by
        )
        if tournament.grid_message_id is not None:
            try:
                await channel.get_partial_message(tournament.grid_message_id).edit(view=None)
            except discord.HTTPException as exc:
                log.info("could not take the buttons off tournament %d: %s", tournament.id, exc)
        await channel.send(f"Candidate {tournament.chosen} goes on ({why}) → #{job.id}.")

    async def tournament_failed(self, tournament: Tournament, withheld: int = 0) -> None:
        """Say that no candidate finished, or that the output check withheld every one that did."""
        channel = await self._channel(tournament.thread_id or tournament.channel_id)
        if withheld:
            await channel.send(
                f"<@{tournament.author_id}> this server's output check withheld every finished candidate of this "
                "tournament: nothing to pick from. Try another prompt.",
                allowed_mentions=author_only(tournament.author_id),
            )
            return
        await channel.send("No candidate of this tournament finished (cancelled or failed): nothing to pick from.")
