"""The generators: what the loop optimises (parameters) and how they become an image.

Each generator is one module here that declares itself (`base.Declaration`: its name, options, learning rate,
weights, size rule, memory costs and flags) and holds its torch implementation, which loads torch only when it
is built. The registry below is the one list of them: the spec, the CLI, the bot's model choices, the model
pool and the memory check all read it. Adding a generator is one module and its line here.

    declaration("biggan").options(truncation=0.5)      # torch-free
    make_generator(spec, width, height, weights, engine)  # the torch half
"""

from __future__ import annotations

from engine.errors import InvalidSpec
from engine.generators import biggan, dvae, fourier, pixels, siren, vqgan
from engine.generators.base import Declaration, Options

REGISTRY: dict[str, Declaration] = {
    module.DECLARATION.name: module.DECLARATION for module in (vqgan, fourier, biggan, dvae, siren, pixels)
}
NAMES = tuple(REGISTRY)


def declaration(name: str) -> Declaration:
    """The declaration of generator `name`; InvalidSpec naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidSpec(f"Unknown generator {name!r}; choose one of {', '.join(NAMES)}.") from None


def generator_key(spec, width: int, height: int) -> tuple:
    """What tells generators apart: runs with equal keys share one generator object (SIREN's renders one size)."""
    return (spec.generator, *declaration(spec.generator).key(spec.options, width, height))


def make_generator(spec, width: int, height: int, weights=None, engine=None):
    """The generator a spec asks for at a size, given its loaded weights (None for a weight-free generator) and
    the engine (whose faster VQGAN decode the VQGAN generator uses)."""
    found = declaration(spec.generator)
    if found.weights and weights is None:
        raise InvalidSpec(f"The {found.name} generator needs its model ({found.default_model}); none is loaded.")
    return found.build(spec.options, weights, engine, width, height)


__all__ = ["NAMES", "REGISTRY", "Declaration", "Options", "declaration", "generator_key", "make_generator"]
