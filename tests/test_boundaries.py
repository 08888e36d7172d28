"""The import rules of the layout: engine/ is torch-side and never touches discord, asyncio or storage;
bot/ and cogs/ never import torch (and reach the torch side of engine/ only lazily, from the embedded
backend); engine/spec.py and engine/errors.py are standard library only, engine/uploads.py adds only PIL
(the bot checks uploads with it); storage/ is the only place that speaks SQL."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_SIDE = {"torch", "torchvision", "open_clip", "taming", "kornia", "numpy", "pytorch_pretrained_biggan", "dall_e"}
DISCORD_SIDE = {"discord", "asyncio", "aiosqlite", "aiohttp", "storage", "bot", "cogs", "celery", "redis"}
SQL = {"sqlite3", "aiosqlite"}
STDLIB_ONLY = {
    "engine/spec.py",
    "engine/prompts.py",
    "engine/keyframes.py",  # animations: the bot builds them from presets and checks keyframes without torch
    "engine/events.py",
    "engine/errors.py",
    "engine/snapshots.py",
    "engine/speed/__init__.py",
    "engine/models/registry.py",
    "engine/models/__init__.py",
    "engine/memory.py",
    "engine/quality.py",  # the presets and their costs: the bot expands, caps and prices them
    "engine/moderation.py",
    "bot/backends/celery/wire.py",  # the bot reads workers' events with it: no torch
    "engine/files.py",
}
PIL_ONLY = {"engine/uploads.py", "engine/video.py"}  # usable from the bot at module level: no torch, no numpy
# CLIP's text cleaning and BPE for the word filter: the standard library and ftfy (which open_clip's tokenizer uses
# and which imports no torch, no numpy); the merges file is found without importing open_clip.
FTFY_ONLY = {"engine/cliptext.py"}
# The generators' declarations: standard library at module level, torch only when a generator is built (the test
# below checks it); the spec and the bot read them.
DECLARATIONS = {"engine.generators"} | {
    f"engine.generators.{p.stem}" for p in (ROOT / "engine" / "generators").glob("*.py") if p.stem != "parts"
}


def _module(rel: str) -> str:
    """The module a file is: engine/speed/__init__.py -> engine.speed, engine/spec.py -> engine.spec."""
    return rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["engine", "bot", "cogs", "storage"])
def test_package_exists(package):
    assert _files(package), f"{package}/ has no modules"


def test_engine_never_imports_the_bot_side():
    for path in _files("engine"):
        bad = _imports(path) & DISCORD_SIDE
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def _module_level_imports(path: Path) -> set[str]:
    """Full module names imported at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module in ("engine", "engine.models"):  # `from engine import run` imports engine.run
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("package", ["bot", "cogs", "storage"])
def test_bot_side_never_imports_torch(package):
    """No torch, open_clip, taming... anywhere in bot/, cogs/, storage/."""
    for path in _files(package):
        bad = _imports(path) & TORCH_SIDE
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", ["bot", "cogs", "storage"])
def test_bot_side_loads_torch_side_engine_modules_only_lazily(package):
    """Module-level imports from engine/ are limited to the standard-library modules (spec, errors, registry).
    The embedded backend reaches the rest inside functions, when it runs its first job."""
    light = {_module(rel) for rel in STDLIB_ONLY | PIL_ONLY | FTFY_ONLY}
    light |= {"engine", "engine.models", "engine.__version__"} | DECLARATIONS
    light.add("engine.env")  # standard library and python-dotenv: reads .env for the bot and the command lines
    for path in _files(package):
        heavy = {m for m in _module_level_imports(path) if m.split(".")[0] == "engine" and m not in light}
        assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)} at module level"


def test_importing_the_bot_loads_no_torch():
    import subprocess

    code = (
        "import sys, bot.client, bot.__main__, cogs.imagine, cogs.votes, cogs.errors, storage; "
        "print(sorted(m for m in ('torch', 'open_clip', 'taming') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_stdlib_only_modules():
    stdlib = set(sys.stdlib_module_names) | {"engine", "__future__"}
    for rel in STDLIB_ONLY:
        bad = _imports(ROOT / rel) - stdlib
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_pil_only_modules():
    # imageio_ffmpeg is the ffmpeg binary in a wheel and the standard library around it (engine/video.py)
    stdlib = set(sys.stdlib_module_names) | {"engine", "__future__", "PIL", "imageio_ffmpeg"}
    for rel in PIL_ONLY:
        bad = _imports(ROOT / rel) - stdlib
        assert not bad, f"{rel} imports {sorted(bad)}"
        light = {_module(r) for r in STDLIB_ONLY | PIL_ONLY} | {"engine"}
        engine_side = {m for m in _module_level_imports(ROOT / rel) if m.split(".")[0] == "engine"}
        assert engine_side <= light, f"{rel} imports {sorted(engine_side - light)}"


def test_ftfy_only_modules():
    stdlib = set(sys.stdlib_module_names) | {"engine", "__future__", "ftfy"}
    for rel in FTFY_ONLY:
        bad = _imports(ROOT / rel) - stdlib
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_only_storage_speaks_sql():
    for package in ["engine", "bot", "cogs"]:
        for path in _files(package):
            bad = _imports(path) & SQL
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_engine_spec_loads_without_torch():
    import subprocess

    code = (
        "import sys, engine.spec, engine.errors, engine.models.registry, engine.memory, engine.uploads, "
        "engine.moderation, engine.generators; "
        "[d.options() for d in engine.generators.REGISTRY.values()]; "
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_arrows_between_bot_cogs_and_storage():
    """cogs/ reach the jobs through bot/ (the job service is their one door) and never import storage; nothing
    under bot/ imports cogs/ (the cogs attach themselves as they load)."""
    for path in _files("cogs"):
        bad = _imports(path) & {"storage", "sqlite3", "aiosqlite"}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    for path in _files("bot"):
        assert "cogs" not in _imports(path), f"{path.relative_to(ROOT)} imports cogs"


def _undocumented(path: Path) -> list[str]:
    found = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if child.name.startswith("_"):
                continue
            if ast.get_docstring(child) is None:
                found.append(f"{path.relative_to(ROOT)}:{child.lineno} {prefix}{child.name}")
            if isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(ast.parse(path.read_text()), "")
    return found


@pytest.mark.parametrize("package", ["engine", "bot", "cogs", "storage"])
def test_public_classes_and_functions_say_what_they_do(package):
    missing = [item for path in _files(package) for item in _undocumented(path)]
    assert not missing, "no docstring: " + ", ".join(missing)


def test_a_generator_module_loads_torch_only_when_it_builds():
    """Each generator module declares itself with the standard library at module level (the spec and the bot read
    the declarations) and names torch through `LazyModule`; only `engine/generators/parts.py` is torch at import."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    light = {_module(r) for r in STDLIB_ONLY} | {"engine", "engine.models", "engine.generators"}
    modules = sorted((ROOT / "engine" / "generators").glob("*.py"))
    assert len(modules) >= 7
    for path in modules:
        if path.name == "parts.py":
            continue
        imported = _module_level_imports(path)
        outside = {m for m in imported if m.split(".")[0] not in stdlib and m.split(".")[0] != "engine"}
        engine_side = {m for m in imported if m.split(".")[0] == "engine"} - light
        engine_side -= {f"engine.generators.{p.stem}" for p in modules if p.name != "parts.py"}
        assert not outside and not engine_side, f"{path.relative_to(ROOT)} imports {sorted(outside | engine_side)}"
