"""`python -m engine` / `imagine`: generate one image from a prompt on this machine.

python -m engine "a cityscape at night | trending on artstation" -o city.png --size 512x288 --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from engine import generators, quality
from engine.env import load_env, quiet_libraries
from engine.errors import Cancelled, EngineError
from engine.keyframes import PRESET_SUMMARIES, PRESETS, Animation, frame_steps_for, preset
from engine.models import registry
from engine.prompts import parse_prompt
from engine.spec import JobSpec, random_seed

log = logging.getLogger("engine.cli")


def parse_size(text: str) -> tuple[int, int]:
    """`512x288` or `256` (a square) as (width, height)."""
    try:
        w, _, h = text.lower().partition("x")
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x288 or 256, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The `imagine` command line's flags."""
    p = argparse.ArgumentParser(prog="imagine", description="CLIP-guided image generation (VQGAN+CLIP and friends).")
    p.add_argument(
        "prompt",
        nargs="?",
        help='text prompts: "a | b:0.5 | c:-1" (weight, optional :stop); "A / B" puts A left of B (a composition)',
    )
    p.add_argument("-o", "--output", default="output.png", help="where to write the PNG (default output.png)")
    p.add_argument("-s", "--size", type=parse_size, default=(256, 256), help="WxH, rounded down to the model's grid")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, help="random when omitted; printed and stored in the PNG")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 0.1, 0.05 for compositions)")
    p.add_argument(
        "--layout",
        choices=["auto", "single", "panorama", "vertical", "mirror"],
        default="auto",
        help='how "A / B" parts are laid out: panorama (left to right, the default for parts), vertical (top to '
        "bottom), mirror (mirrored cutout pairs: a juxtaposition or a symmetric image)",
    )
    p.add_argument(
        "--prompt-at",
        action="append",
        default=[],
        metavar="STEP=TEXT",
        help="from STEP on, aim at TEXT instead (repeatable: a story told over the run)",
    )
    p.add_argument("--tone-weight", type=float, help="tone symmetry: blurred grey image vs its mirror (mirror: 0.5)")
    p.add_argument("--semantic-weight", type=float, help="semantic symmetry of mirrored cutouts (mirror: 0.1)")
    p.add_argument(
        "--size-weight", type=float, default=0.0, help="> 0 favours large cutouts (composition), < 0 small (detail)"
    )
    p.add_argument("--cutn", type=int, default=32, help="cutouts per step (default 32)")
    p.add_argument("--cut-pow", type=float, default=1.0)
    _add_quality_flags(p)
    p.add_argument(
        "--generator",
        choices=generators.NAMES,
        default="vqgan",
        help="; ".join(f"{d.name}: {d.summary}" for d in generators.REGISTRY.values()),
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"the generator's weights in the models directory (default {registry.DEFAULT_VQGAN}, biggan-deep-256, "
        "dalle-dvae)",
    )
    for found in generators.REGISTRY.values():  # each generator's own flags, as it declares them
        for flag in found.flags:
            p.add_argument(flag.flag, dest=_flag_dest(found.name, flag.option), type=flag.type, help=flag.help)
    p.add_argument(
        "--upscale",
        type=int,
        action="append",
        default=[],
        metavar="STEPS",
        help="then double the size and run STEPS more steps (repeatable); with --resume, upscales a finished run",
    )
    _add_animation_flags(p)
    p.add_argument(
        "--clip",
        help="open_clip architecture (default $IMAGINE_CLIP_MODEL or ViT-B-32)",
    )
    p.add_argument("--init-image", help="start from this image instead of noise")
    p.add_argument("--init-weight", type=float, default=0.0, help="pull towards the init image (MSE weight)")
    p.add_argument("--image-prompt", action="append", default=[], help="an image to aim for (path[:weight])")
    p.add_argument("--save-every", type=int, default=0, help="also write every Nth frame next to the output")
    p.add_argument("--snapshot", help="write the run's state here at the end (for --resume)")
    p.add_argument("--resume", help="continue from a snapshot; --steps is the new total")
    p.add_argument("--recipe", help="reproduce the image whose PNG recipe this is (flags given also apply)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--models-dir", help="models directory (default $IMAGINE_MODELS_DIR or ./models)")
    p.add_argument("--vqgan-config", help="explicit VQGAN .yaml (else from the models directory)")
    p.add_argument("--vqgan-checkpoint", help="explicit VQGAN .ckpt (else from the models directory)")
    p.add_argument("--clip-checkpoint", help="explicit CLIP checkpoint (open_clip or OpenAI .pt)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


# The animation's flags and the Animation field each sets (engine.keyframes).
ANIMATION_FLAGS = {
    "--frames": "frames",
    "--fps": "fps",
    "--frame-steps": "frame_steps",
    "--zoom": "zoom",
    "--angle": "angle",
    "--translation-x": "translation_x",
    "--translation-y": "translation_y",
    "--frame-prompts": "prompts",
}


def _add_animation_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("animation (an .mp4 is written next to the PNG; keyframes as Disco writes them)")
    presets = "; ".join(f"{name}: {summary}" for name, summary in PRESET_SUMMARIES.items())
    g.add_argument("--animate", choices=list(PRESETS), help=f"animate with a preset motion ({presets})")
    g.add_argument("--frames", type=int, help="frames of the animation (default 48)")
    g.add_argument("--fps", type=int, help="frames per second of the video (default 12)")
    g.add_argument("--frame-steps", type=int, help="steps of each frame after the first (default a quarter of --steps)")
    g.add_argument("--zoom", help='zoom per frame as keyframes, e.g. "0: (1.0), 30: (1.04)" (1 = none)')
    g.add_argument("--angle", help='degrees turned per frame, counterclockwise, e.g. "0: (0), 30: (2)"')
    g.add_argument("--translation-x", help='pixels moved right per frame, e.g. "0: (3)"')
    g.add_argument("--translation-y", help='pixels moved down per frame, e.g. "0: (-3)"')
    g.add_argument("--frame-prompts", help='prompts keyed by frame: "0: a forest | oil painting; 60: a city at night"')


def _animation(args: argparse.Namespace, base: dict, steps: int) -> Animation | dict | None:
    """The animation the flags describe: --animate's preset or a recipe's animation (or the defaults), with the
    keyframe flags given applied; a recipe's as it is when no animation flag is given; None for a still image."""
    changes = {
        field: getattr(args, flag[2:].replace("-", "_"))
        for flag, field in ANIMATION_FLAGS.items()
        if getattr(args, flag[2:].replace("-", "_")) is not None
    }
    recorded = base.get("animation")
    if args.animate is None and not changes:
        return recorded
    if args.animate is None and recorded:
        return Animation.from_dict(recorded).replace(**changes)
    changes.setdefault("frame_steps", frame_steps_for(steps))
    return preset(args.animate, **changes) if args.animate else Animation(**changes)


def parse_schedule(items: list[str]) -> tuple[tuple[int, str], ...]:
    """["100=a ruin", "200=a forest"] -> ((100, "a ruin"), (200, "a forest")), sorted by step."""
    schedule = []
    for item in items:
        step, sep, text = item.partition("=")
        if not sep or not step.strip().isdigit() or not text.strip():
            raise EngineError(f"--prompt-at takes STEP=TEXT, e.g. --prompt-at '100=a ruined castle', not {item!r}.")
        schedule.append((int(step), text.strip()))
    return tuple(sorted(schedule))


# The quality flags and the JobSpec field each sets (engine.quality).
QUALITY_FLAGS = {
    "--clip-ensemble": "perceptors",
    "--cut-overview": "cut_overview",
    "--cut-inner": "cut_inner",
    "--cut-gray": "cut_gray",
    "--tv-scale": "tv_scale",
    "--range-scale": "range_scale",
    "--sat-scale": "sat_scale",
}
QUALITY_FIELDS = (
    "quality",
    "perceptors",
    "cut_overview",
    "cut_inner",
    "cut_gray",
    "tv_scale",
    "range_scale",
    "sat_scale",
)


def _add_quality_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quality (several CLIP models, cutout schedules and image losses: engine.quality)")
    presets = "; ".join(f"{x.name}: {x.summary}, {x.steps} steps" for x in quality.PRESETS.values())
    g.add_argument(
        "--quality",
        choices=list(quality.PRESET_ORDER),
        help=f"a preset ({presets}); --steps, --cutn, --cut-pow and the flags below override its values",
    )
    g.add_argument(
        "--clip-ensemble",
        metavar="NAME:WEIGHT,...",
        help='several CLIP models guiding at once, e.g. "ViT-B-32:1,RN50:0.5"; the first gives the scores',
    )
    g.add_argument("--cut-overview", metavar="SCHEDULE", help='whole-image cutouts per step: "[12]*100+[4]*300" or 8')
    g.add_argument(
        "--cut-inner", metavar="SCHEDULE", help='random-crop cutouts per step (sizes by --cut-pow): "[4]*100+[12]*300"'
    )
    g.add_argument("--cut-gray", type=float, help="the fraction of the inner cutouts seen in greyscale (0 to 1)")
    g.add_argument("--tv-scale", type=float, help="total-variation loss: smoother images (e.g. 0.05)")
    g.add_argument("--range-scale", type=float, help="pulls the decoder's output back into range (e.g. 0.03)")
    g.add_argument("--sat-scale", type=float, help="Disco's saturation loss: the absolute overshoot (e.g. 0.01)")


def parse_ensemble(text: str) -> tuple[tuple[str, float], ...]:
    """ "ViT-B-32:1,RN50:0.5" -> (("ViT-B-32", 1.0), ("RN50", 0.5)); a name alone has weight 1."""
    members = []
    for item in text.split(","):
        name, sep, weight = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "1")
        try:
            members.append((name.strip(), float(weight)))
        except ValueError:
            raise EngineError(
                f'--clip-ensemble takes NAME:WEIGHT pairs, e.g. "ViT-B-32:1,RN50:0.5", not {text!r}.'
            ) from None
    return tuple(members)


def _quality_fields(args: argparse.Namespace, argv: list[str], base: dict) -> dict:
    """The quality fields: a recipe's, replaced by --quality's preset, then the single flags given (which leave no
    preset name: the values are no longer the preset's). Also the steps, cutouts and CLIP a preset sets, where
    their flags are not given."""
    given = {a.split("=")[0] for a in argv if a.startswith("-")}
    out = {name: base[name] for name in QUALITY_FIELDS if name in base}
    if args.quality:
        out = quality.expand(args.quality)
        for flag, name in (("--steps", "steps"), ("--cutn", "cutn"), ("--cut-pow", "cut_pow")):
            if flag in given:
                del out[name]
    for flag, name in QUALITY_FLAGS.items():
        if flag in given:
            value = getattr(args, name if name != "perceptors" else "clip_ensemble")
            out[name] = parse_ensemble(value) if name == "perceptors" else value
            out["quality"] = None
    perceptors = out.get("perceptors") or ()
    if perceptors and "--clip" in given and args.clip != perceptors[0][0]:
        raise EngineError(
            f"--clip {args.clip} and the ensemble ({', '.join(n for n, _ in perceptors)}) disagree: the ensemble's "
            "first CLIP is the one that gives the scores; list it first in --clip-ensemble instead."
        )
    return out


def _flag_dest(generator: str, option: str) -> str:
    return f"option_{generator}_{option}"


def _options(args: argparse.Namespace, generator: str, base: dict) -> dict:
    """The generator's options: a recipe's (of the same generator), then the flags given; a flag of another
    generator is refused, since it would do nothing."""
    options = dict(base.get("options") or {}) if base.get("generator") == generator else {}
    for found in generators.REGISTRY.values():
        for flag in found.flags:
            value = getattr(args, _flag_dest(found.name, flag.option))
            if value is None:
                continue
            if found.name != generator:
                raise EngineError(f"{flag.flag} is an option of the {found.name} generator; this run uses {generator}.")
            options[flag.option] = value
    return options


def spec_from_args(args: argparse.Namespace, argv: list[str], default_clip: str = registry.DEFAULT_CLIP) -> JobSpec:
    """The job the flags (and a --recipe, whose fields the flags given override) describe. `default_clip` is the
    CLIP of a run that names none (IMAGINE_CLIP_MODEL, read by the caller)."""
    base: dict = {}
    if args.recipe:
        from engine.images import read_recipe

        meta = read_recipe(args.recipe)
        if not meta:
            raise EngineError(f"{args.recipe} holds no imagine recipe.")
        base = JobSpec.from_dict(meta["spec"]).to_dict()  # checked, and every field present
        base = _images_beside(base, Path(args.recipe).parent)
    given = {a.split("=")[0] for a in argv if a.startswith("-")}
    flag = lambda *names: not base or any(n in given for n in names)  # noqa: E731
    fields = {
        "prompt": args.prompt if args.prompt or not base else base["prompt"],
        "width": args.size[0] if flag("-s", "--size") else base["width"],
        "height": args.size[1] if flag("-s", "--size") else base["height"],
        "steps": args.steps if flag("--steps") else base["steps"],
        "lr": args.lr if flag("--lr") else base["lr"],
        "layout": args.layout if flag("--layout") else base.get("layout", "auto"),
        "tone_weight": args.tone_weight if flag("--tone-weight") else base.get("tone_weight"),
        "semantic_weight": args.semantic_weight if flag("--semantic-weight") else base.get("semantic_weight"),
        "size_weight": args.size_weight if flag("--size-weight") else base.get("size_weight", 0.0),
        "prompt_schedule": parse_schedule(args.prompt_at)
        if flag("--prompt-at")
        else tuple(tuple(e) for e in base.get("prompt_schedule", ())),
        "cutn": args.cutn if flag("--cutn") else base["cutn"],
        "cut_pow": args.cut_pow if flag("--cut-pow") else base["cut_pow"],
        "generator": args.generator if flag("--generator") else base["generator"],
        "model": None,
        "upscales": tuple(base.get("upscales", ())) + tuple(args.upscale),
        "clip_model": (args.clip or default_clip) if flag("--clip") else base["clip_model"],
        # A recipe is shared: it names models (JobSpec checks they are plain names, looked up in the models
        # directory) and never points this machine at files: its pictures are only looked for, by file name, in
        # the folder of the recipe's PNG (see _images_beside); the command line can name any.
        "init_image": args.init_image if flag("--init-image") else base.get("init_image"),
        "init_weight": args.init_weight if flag("--init-weight") else base.get("init_weight", 0.0),
        "image_prompts": tuple(args.image_prompt) if flag("--image-prompt") else tuple(base.get("image_prompts", ())),
    }
    fields["options"] = _options(args, fields["generator"], base)
    fields.update(_quality_fields(args, argv, base))
    fields["animation"] = _animation(args, base, fields["steps"])
    if args.model and flag("--model"):
        fields["model"] = args.model
    elif base and fields["generator"] == base["generator"]:
        fields["model"] = base["model"]
    else:
        fields["model"] = registry.DEFAULT_VQGAN  # stands for "none given": the spec picks the generator's default
    seed = args.seed if args.seed is not None else (base.get("seed") if base else None)
    fields["seed"] = random_seed() if seed is None else seed
    if not fields["prompt"]:
        raise EngineError('Give a prompt, e.g. imagine "a lighthouse in a storm | oil painting".')
    for name in base.get("missing_images", ()):
        print(f"note: the recipe's picture {name} is not beside it; pass --init-image/--image-prompt", file=sys.stderr)
    return JobSpec(**fields)


def _images_beside(base: dict, folder: Path) -> dict:
    """A recipe names its pictures by file name only: use the files of those names in `folder` (the recipe PNG's
    folder), never a path the recipe gives; a picture that is not there is left out (and named in
    `missing_images`)."""

    def beside(name: str) -> str | None:
        candidate = folder / Path(name).name
        return str(candidate) if candidate.is_file() else None

    base = dict(base)
    missing = []
    if base.get("init_image"):
        found = beside(base["init_image"])
        missing += [] if found else [Path(base["init_image"]).name]
        base["init_image"] = found
    prompts = []
    for prompt in (parse_prompt(p) for p in base.get("image_prompts", ())):
        found = beside(prompt.text)
        if found:
            prompts.append(str(dataclasses.replace(prompt, text=found)))
        else:
            missing.append(Path(prompt.text).name)
    base["image_prompts"] = prompts
    base["missing_images"] = missing
    return base


def main(argv: list[str] | None = None) -> int:
    """`imagine` / `python -m engine`: make one image; 0 when written, 2 with one sentence on stderr when not."""
    argv = sys.argv[1:] if argv is None else argv
    load_env()  # the same .env as the bot: models, device and speed settings
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        return _generate(args, argv)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output or snapshot cannot be written, for one
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return 2


def _check_before_loading(spec: JobSpec, pool, speed) -> None:
    """Everything that can be refused before the models load: the images and the memory the job needs."""
    from engine.images import load_image
    from engine.loading import device_budget

    if spec.init_image:
        load_image(spec.init_image, f"the init image {spec.init_image}")
    for target in spec.image_targets:
        load_image(target.text, f"the image prompt {target.text}")
    budget = device_budget(pool.device, speed, free=True)
    if budget is not None:
        budget.check(spec.width, spec.height, spec.cutn, spec.generator, tuple(n for n, _ in quality.members(spec)))


def _generate(args: argparse.Namespace, argv: list[str]) -> int:
    from tqdm import tqdm

    from engine.images import to_pil
    from engine.loading import EnginePool, ModelSettings
    from engine.loop import Callbacks, run_to_end
    from engine.run import load_snapshot, save_snapshot

    env = ModelSettings.from_env()  # the CLI's one reader of IMAGINE_* keys, speed settings included; flags win
    spec = spec_from_args(args, argv, env.clip_model)
    settings = dataclasses.replace(
        env,
        models_dir=registry.models_dir(args.models_dir) if args.models_dir else env.models_dir,
        vqgan_config=Path(args.vqgan_config) if args.vqgan_config else env.vqgan_config,
        vqgan_checkpoint=Path(args.vqgan_checkpoint) if args.vqgan_checkpoint else env.vqgan_checkpoint,
        clip_checkpoint=Path(args.clip_checkpoint) if args.clip_checkpoint else env.clip_checkpoint,
        device=args.device or env.device,
    )
    pool = EnginePool(settings)
    _check_before_loading(spec, pool, settings.speed)
    snapshot = load_snapshot(args.resume) if args.resume else None
    engine = pool.engine_for(spec)
    run = engine.start(spec, snapshot)
    if run.stage == 0 and (run.width, run.height) != (spec.width, spec.height):
        print(
            f"note: {spec.width}x{spec.height} rounded to {run.width}x{run.height} (the model's grid)", file=sys.stderr
        )
    print(f"seed {spec.seed}, {run.width}x{run.height}, {spec.steps} steps on {engine.device}", file=sys.stderr)
    for k, steps in enumerate(spec.upscales[run.stage :], start=run.stage + 1):
        scale = 2 ** (k - run.stage)
        print(f"then upscaled to {run.width * scale}x{run.height * scale}, {steps} steps", file=sys.stderr)
    if spec.animation is not None:
        a = spec.animation
        print(f"then {a.frames - 1} more frames of {a.frame_steps} steps ({a.frames} at {a.fps} fps)", file=sys.stderr)

    stop = {"asked": False}

    def on_sigint(signum, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=spec.total_steps, initial=run.step_index, disable=args.quiet, dynamic_ncols=True)

    def on_step(run) -> None:
        bar.update(1)
        if run.step_index % 5 == 0 or run.done:
            bar.set_postfix(loss=f"{float(run.last_losses.sum()):.4f}")
        if args.save_every and run.step_index % args.save_every == 0:
            frame = output.with_name(f"{output.stem}-{run.step_index:05d}.png")
            to_pil(run.last_image if run.last_image is not None else run.image()).save(frame)

    try:
        result = run_to_end(engine, run, Callbacks(should_stop=lambda: stop["asked"], on_step=on_step))
    except Cancelled as stopped:
        result = stopped.result
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    output.write_bytes(result.image)
    if result.video is not None:
        video = output.with_suffix(".mp4")
        video.write_bytes(result.video)
        print(f"{result.frames_done} frames at {spec.animation.fps} fps: {video}", file=sys.stderr)
    elif spec.animation is not None:
        print("note: the video could not be made (see the log); the last frame is in the PNG", file=sys.stderr)
    if args.snapshot:
        save_snapshot(run.snapshot(), args.snapshot)
    scores = ", ".join(f"{t!r} {s:.3f}" for t, s in result.scores)
    state = "stopped early at" if stop["asked"] else "finished"
    print(f"{state} step {result.steps_done}: {output} (CLIP {scores})", file=sys.stderr)
    return 130 if stop["asked"] else 0
