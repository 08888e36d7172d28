"""Pure functions that build what members read: status lines, embeds, recipes."""

from __future__ import annotations

import json

import discord

from bot.jobs import Job
from engine.spec import JobSpec, Progress, Result, parse_regions

COLOR = discord.Color.from_rgb(114, 92, 255)
MAX_PROMPT_SHOWN = 200


def short(text: str, limit: int = MAX_PROMPT_SHOWN) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float) -> str:
    """Seconds as `42s`, `3m 05s` or `1h 02m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def queued_line(job: Job, spec: JobSpec, eta: float, position: int | None) -> str:
    """The "Queued #N" line: prompt and ETA, and the position when the job is not next."""
    where = f" · position {position}" if position and position > 1 else ""
    return f"Queued #{job.id} · {short(spec.prompt)} · ETA ~{duration(eta)}{where}"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 24) -> str:
    """The last `width` values as block characters, scaled between their own minimum and maximum."""
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span <= 1e-9:
        return SPARKS[len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values)


def similarity_lines(texts: list[str], history: list[tuple[float, ...]]) -> str:
    """One line per prompt: its sparkline of CLIP similarity over the run and the latest value."""
    lines = []
    for i, text in enumerate(texts[:6]):
        series = [h[i] for h in history if len(h) > i]
        if series:
            lines.append(f"`{sparkline(series)}` {series[-1]:.3f} · {short(text, 40)}")
    return "\n".join(lines)


def status_embed(
    job: Job,
    spec: JobSpec,
    progress: Progress | None,
    *,
    state: str = "running",
    history: list[tuple[float, ...]] | None = None,
) -> discord.Embed:
    """The status card titled by `state`: with `progress`, a step bar, loss, time, CLIP sparklines and the preview;
    without, the steps done."""
    title = {"running": "Painting…", "starting": "Starting…", "done": "Done", "cancelled": "Cancelled"}.get(
        state, state
    )
    prompt = (progress.prompt if progress is not None and progress.prompt else "") or spec.prompt_at(job.steps_done)
    embed = discord.Embed(title=f"#{job.id} · {title}", description=short(prompt, 300), color=COLOR)
    if progress is not None:
        bar = int(20 * progress.step / max(1, progress.steps))
        embed.add_field(name="Step", value=f"`{'█' * bar}{'░' * (20 - bar)}` {progress.step}/{progress.steps}")
        embed.add_field(name="Loss", value=f"{progress.loss:.4f}")
        embed.add_field(name="Elapsed", value=duration(progress.elapsed))
        texts = [p.text for region in parse_regions(prompt) for p in region]
        lines = similarity_lines(texts, history or [progress.similarities])
        if lines:
            embed.add_field(name="CLIP similarity", value=lines[:1024], inline=False)
        embed.set_image(url="attachment://preview.png")
    else:
        embed.add_field(name="Step", value=f"{job.steps_done}/{spec.total_steps}")
    embed.set_footer(text=f"seed {spec.seed} · {spec.width}x{spec.height} · {model_name(spec)}")
    return embed


def model_name(spec: JobSpec) -> str:
    """The generator's weights by name (BigGAN, dVAE, VQGAN), or the generator itself where it has none."""
    return spec.generator if spec.generator in ("fourier", "siren") else spec.model


def result_embed(job: Job, spec: JobSpec, result: Result, filename: str | None) -> discord.Embed:
    """The result's card; with no `filename` the image is not in the card (a spoilered attachment shows it)."""
    embed = discord.Embed(title=f"#{job.id}", description=short(spec.prompt, 1000), color=COLOR)
    if filename is not None:
        embed.set_image(url=f"attachment://{filename}")
    embed.add_field(name="Seed", value=str(spec.seed))
    embed.add_field(name="Steps", value=str(result.steps_done))
    embed.add_field(name="Size", value=f"{result.width}x{result.height}")
    embed.add_field(name="Model", value=f"{model_name(spec)} + {spec.clip_model}")
    embed.add_field(name="CLIP score", value=f"{result.score:.3f}")
    embed.add_field(name="Time", value=duration(result.elapsed))
    embed.set_footer(
        text="Vote with 👍 / 👎 · Reroll = same settings, new seed · Continue = more steps · Upscale = twice the size"
    )
    return embed


def recipe_text(job: Job, spec: JobSpec) -> str:
    """The Recipe button's reply: CLIP scores and the public spec as JSON (cut to 1500 characters)."""
    scores = ", ".join(f"{t!r}: {s:.3f}" for t, s in job.scores.items()) or "n/a"
    body = json.dumps(spec.to_public_dict(), indent=1, ensure_ascii=False)  # images by name, no folders
    return (
        f"**Recipe of #{job.id}** · {job.steps_done} steps done · CLIP {scores}\n```json\n{body[:1500]}\n```\n"
        "The PNG carries this recipe: `python -m engine --recipe image.png` reproduces it."
    )


def jump_url(guild_id: int | None, channel_id: int, message_id: int | None) -> str:
    """A link to a message (`@me` for DMs); empty when there is no message."""
    if message_id is None:
        return ""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def top_embed(entries, period: str, by: str = "votes") -> discord.Embed:
    """The /top board: per image its votes and CLIP score (the one ranked by first), prompt with a link, and author."""
    embed = discord.Embed(title=f"Top images · {period}" + (" · by CLIP score" if by == "score" else ""), color=COLOR)
    if not entries:
        embed.description = "No finished images yet. Be the first: `/imagine`."
        return embed
    lines = []
    for rank, entry in enumerate(entries, 1):
        job = entry.job
        spec = job.spec
        link = jump_url(job.guild_id, job.post_channel_id, job.result_message_id)
        score = f"{job.score:.3f}" if job.score is not None else "n/a"
        first, second = (
            (f"{entry.votes:+d}", f"CLIP {score}") if by == "votes" else (f"CLIP {score}", f"{entry.votes:+d}")
        )
        lines.append(f"**{rank}.** {first} · [{short(spec.prompt, 80)}]({link}) · {second} · <@{job.author_id}>")
    embed.description = "\n".join(lines)
    return embed
