"""Property-based tests of the prompt parser and spec validation: any text, any JSON gives a spec or an
InvalidSpec with a sentence, never another exception."""

from __future__ import annotations

import dataclasses
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidSpec
from engine.prompts import MAX_PROMPT_CHARS, MAX_PROMPTS, parse_prompts, parse_regions
from engine.spec import JobSpec

# Text drawn from everything, and text drawn from the characters the grammar cares about (so that weights,
# stops, parts and compositions come up often), lone surrogates included.
GRAMMAR = st.text(alphabet=st.sampled_from(list("ab :|/.-+0123456789eEinfINFa_\t\n\ud800\udfff")), max_size=60)
ANY_TEXT = st.one_of(st.text(max_size=200), GRAMMAR)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [f.name for f in dataclasses.fields(JobSpec)]


def _is_sentence(error: InvalidSpec) -> None:
    text = str(error)
    assert isinstance(error, InvalidSpec) and text.strip() and text.rstrip().endswith((".", "?")), repr(text)
    assert len(text) < 4 * MAX_PROMPT_CHARS


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_any_text_parses_to_prompts_or_a_sentence(text):
    try:
        prompts = parse_prompts(text)
    except InvalidSpec as error:
        _is_sentence(error)
        return
    assert 1 <= len(prompts) <= MAX_PROMPTS
    for prompt in prompts:
        assert prompt.text and prompt.text == prompt.text.strip() and len(prompt.text) <= MAX_PROMPT_CHARS
        assert math.isfinite(prompt.weight) and (prompt.stop is None or math.isfinite(prompt.stop))
        assert parse_prompts(str(prompt)) == (prompt,)  # what it prints reads back the same
    prompt.text.encode("utf-8")  # storable and showable


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.sampled_from(["auto", "single", "panorama", "vertical", "mirror", "sideways"]))
def test_any_prompt_makes_a_spec_or_a_sentence(text, layout):
    try:
        spec = JobSpec(text, layout=layout)
    except InvalidSpec as error:
        _is_sentence(error)
        return
    assert JobSpec.from_json(spec.to_json()) == spec
    assert len(parse_regions(spec.prompt)) >= 1 and spec.layout != "auto"
    spec.to_json().encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.lists(st.tuples(st.integers(-5, 20_000), ANY_TEXT), max_size=3))
def test_any_schedule_makes_a_spec_or_a_sentence(text, schedule):
    try:
        spec = JobSpec(text, prompt_schedule=tuple(schedule))
    except InvalidSpec as error:
        _is_sentence(error)
        return
    assert JobSpec.from_json(spec.to_json()) == spec


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_json_text_makes_a_spec_or_a_sentence(text):
    try:
        JobSpec.from_json(text)
    except InvalidSpec as error:
        _is_sentence(error)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELDS, "bogus"]), JSON, max_size=8), st.sampled_from(["a cat", None]))
def test_any_json_object_makes_a_spec_or_a_sentence(data, prompt):
    if prompt is not None:
        data.setdefault("prompt", prompt)
    try:
        spec = JobSpec.from_json(json.dumps(data))
    except InvalidSpec as error:
        _is_sentence(error)
        return
    assert JobSpec.from_json(spec.to_json()) == spec
    assert isinstance(spec.to_public_dict(), dict)
