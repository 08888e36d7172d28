"""/animate: a zoom, drift or spin video whose frames are painted one from the last, through /imagine's door."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.catalog import SIZES, STYLES
from engine.keyframes import PRESET_SUMMARIES

MOTION_CHOICES = [
    app_commands.Choice(name=f"{name}: {text}"[:100], value=name) for name, text in PRESET_SUMMARIES.items()
]
SIZE_CHOICES = [app_commands.Choice(name=name, value=name) for name in SIZES]
STYLE_CHOICES = [app_commands.Choice(name=name, value=name) for name in STYLES]


class AnimateCommand:
    """The /animate command of the Imagine cog (a mixin: the cog's `_enter`, `_spec` and `_submit` are /imagine's
    one door)."""

    @app_commands.command(name="animate", description="A video: each frame painted from the last one, moved a little")
    @app_commands.describe(
        prompt="What to paint (the whole /imagine prompt syntax)",
        motion="How the camera moves (the keyframe fields below override it)",
        frames="How many frames (default 24)",
        fps="Frames per second of the video (default 12)",
        steps="Steps of the first frame (default: as many as fit the server's step limit with the frames)",
        frame_steps="Steps of each later frame (default: a quarter of the first frame's, within the step limit)",
        frame_prompts="Prompts by frame, e.g. '0: a forest; 24: a city at night' (a frame keeps the latest)",
        zoom="Advanced: zoom per frame as keyframes, e.g. '0: (1.0), 12: (1.04)' (1 = none)",
        angle="Advanced: degrees turned per frame as keyframes, e.g. '0: (0), 12: (2)'",
        translation_x="Advanced: pixels moved right per frame as keyframes (negative: left)",
        translation_y="Advanced: pixels moved down per frame as keyframes (negative: up)",
        seed="Starting point (random if empty)",
        size="Shape of the video",
        style="Append a well-known style modifier",
        model="Which generator (every one that can re-encode a picture; BigGAN cannot)",
    )
    @app_commands.choices(motion=MOTION_CHOICES, size=SIZE_CHOICES, style=STYLE_CHOICES)
    async def animate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1000],
        motion: str = "zoom-in",
        frames: app_commands.Range[int, 2, 600] = 24,
        fps: app_commands.Range[int, 1, 60] = 12,
        steps: app_commands.Range[int, 10, 2000] | None = None,
        frame_steps: app_commands.Range[int, 1, 1000] | None = None,
        frame_prompts: app_commands.Range[str, 1, 2000] | None = None,
        zoom: app_commands.Range[str, 1, 400] | None = None,
        angle: app_commands.Range[str, 1, 400] | None = None,
        translation_x: app_commands.Range[str, 1, 400] | None = None,
        translation_y: app_commands.Range[str, 1, 400] | None = None,
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        size: str = "square-small",
        style: str | None = None,
        model: str | None = None,
    ) -> None:
        """/animate: the animation's spec within the server's step limit, then /imagine's gate and queue."""
        origin = self._enter(interaction)
        rules = await self.bot.community.settings(interaction.guild_id)
        most = self.bot.community.max_steps(rules)
        steps, frame_steps = self.bot.catalog.animation_steps(
            frames, steps, frame_steps, default=self.bot.community.default_steps(rules), most=most
        )
        animation = self.bot.catalog.animation(
            motion,
            frames=frames,
            fps=fps,
            frame_steps=frame_steps,
            prompts=frame_prompts,
            zoom=zoom,
            angle=angle,
            translation_x=translation_x,
            translation_y=translation_y,
        )
        spec = self._spec(
            rules, prompt, seed=seed, steps=steps, size=size, style=style, model=model, animation=animation
        )
        await self._submit(interaction, origin, spec)
