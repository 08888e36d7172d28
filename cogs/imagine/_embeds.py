"""Pure functions that build what members read: status lines, embeds, recipes.

Member text (prompts, Steer texts) goes through one of two functions wherever it is shown: `short` where Discord
renders Markdown (message content, embed descriptions and field values), so it shows as typed and cannot form a
link, bold text, a spoiler, a code block or a heading; `one_line` where text is shown as it is (thread names). Both
keep it on one line, without control, bidi or invisible format characters. The bot's own links are bare URLs
placed after member text, never masked links around or before it: a masked link's text may run on over a "]" of
the member's, escaped or not, up to a "](" further on.
"""

from __future__ import annotations

import json
import re
import unicodedata

import discord

from bot.jobs import Job
from engine import quality
from engine.events import Progress, Result
from engine.prompts import parse_regions
from engine.spec import JobSpec

COLOR = discord.Color.from_rgb(114, 92, 255)
MAX_PROMPT_SHOWN = 200

# Zero-width joiners stay: emoji sequences and some scripts need them, and they turn no text around.
_JOINERS = frozenset("\u200c\u200d")
# Escaped wherever they stand: emphasis, strike, spoilers, code, link brackets, and the escape character itself.
# Mentions (<@1>) stay as written: they show, and the bot's AllowedMentions keep them from pinging anyone.
_MARKDOWN = frozenset("\\*_~|`[]()")
# Markdown only at the start of a line: headings, subtext, quotes, list items, ordered list items.
_LINE_START = re.compile(r"(?:#{1,3}|-#?|>{1,3}|\+|\d+[.)])(?=\s)")


def _invisible(ch: str) -> bool:
    """Format characters (bidi overrides, isolates and marks, zero-width spaces, BOM, tags) and lone surrogates."""
    return unicodedata.category(ch) in ("Cf", "Cs") and ch not in _JOINERS


def _breaks(ch: str) -> bool:
    """Control characters (NUL, escape, tab, line feed, NEL) and line or paragraph separators: spaces here."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _plain(text: str) -> str:
    """`text` on one line: control characters and line breaks as spaces, format characters removed, whitespace
    collapsed."""
    return " ".join("".join(" " if _breaks(ch) else "" if _invisible(ch) else ch for ch in text).split())


def one_line(text: str, limit: int = MAX_PROMPT_SHOWN) -> str:
    """`text` as plain text on one line, for places that show it as it is (a thread name): control characters and
    line breaks become spaces, format characters (bidi overrides, isolates and marks, zero-width spaces) are
    removed, whitespace collapses, mentions are broken (a thread's name comes back as the content of the message
    announcing it, where no AllowedMentions apply), and it is cut to `limit` characters with an ellipsis. No
    Markdown escaping."""
    kept = discord.utils.escape_mentions(_plain(text))  # after _plain, which would remove its zero-width spaces
    limit = max(1, limit)
    return kept if len(kept) <= limit else kept[: limit - 1].rstrip() + "…"


def _escaped(text: str) -> list[str]:
    """`text` as pieces, one per character, each escaped where Discord would read it as Markdown."""
    pieces = ["\\" + ch if ch in _MARKDOWN else ch for ch in text]
    lead = _LINE_START.match(text)
    if lead:
        for k in range(lead.start(), lead.end()):
            if not text[k].isdigit() and not pieces[k].startswith("\\"):
                pieces[k] = "\\" + pieces[k]
    for found in re.finditer(r"://", text):  # https\://… is not linked (nor previewed) by Discord
        pieces[found.start()] = "\\:"
    return pieces


def short(text: str, limit: int = MAX_PROMPT_SHOWN) -> str:
    """Member text for places that render Markdown: on one line as in `one_line`, every Markdown character escaped
    so it shows as typed, and at most `limit` characters escapes included, cut before a whole character with an
    ellipsis. Mentions stay as written: the bot's AllowedMentions keep them from pinging."""
    pieces = _escaped(_plain(text))
    if sum(len(piece) for piece in pieces) <= limit:
        return "".join(pieces)
    kept, used = [], 0
    for piece in pieces:
        if used + len(piece) > limit - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept).rstrip() + "…"


def _json_block(text: str) -> str:
    """JSON text made safe inside a ``` block: backticks (which could close it) and invisible format characters
    written as \\u escapes, which any JSON reader reads back as the same text."""
    return "".join(json.dumps(ch)[1:-1] if _invisible(ch) else "\\u0060" if ch == "`" else ch for ch in text)


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
        if progress.frames:
            embed.add_field(name="Frame", value=f"{progress.frame + 1} of {progress.frames}")
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
    clips = [name for name, _ in quality.members(spec)]
    embed.add_field(name="Model", value=f"{model_name(spec)} + {' + '.join(clips)}")
    if spec.quality:
        embed.add_field(name="Quality", value=spec.quality)
    # An ensemble's score is its first CLIP model's (engine.quality.SCORE_CONVENTION): said where it is shown.
    scored_by = f" ({quality.score_model(spec)})" if len(clips) > 1 else ""
    embed.add_field(name=f"CLIP score{scored_by}", value=f"{result.score:.3f}")
    embed.add_field(name="Time", value=duration(result.elapsed))
    embed.set_footer(
        text="Vote with 👍 / 👎 · Reroll = same settings, new seed · Continue = more steps · Upscale = twice the size"
    )
    return embed


def recipe_text(job: Job, spec: JobSpec) -> str:
    """The Recipe button's reply: CLIP scores and the public spec as JSON (cut to 1500 characters)."""
    scores = ", ".join(f"'{short(t, 80)}': {s:.3f}" for t, s in job.scores.items()) or "n/a"
    body = _json_block(json.dumps(spec.to_public_dict(), indent=1, ensure_ascii=False))  # images by name, no folders
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
    """The /top board: per image its votes and CLIP score (the one ranked by first), prompt, author and a link to it
    (a bare message link, which Discord shows as a short chip: no masked link near member text)."""
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
        where = f" · {link}" if link else ""
        lines.append(f"**{rank}.** {first} · {short(spec.prompt, 80)} · {second} · <@{job.author_id}>{where}")
    embed.description = "\n".join(lines)
    if by == "score":
        embed.set_footer(text=quality.SCORE_CONVENTION)
    return embed
