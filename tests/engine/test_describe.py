"""`/describe`, engine side: the shipped vocabulary, ranking against a direct CLIP computation, the prompt, and the
embedding cache (written once, loaded later, rebuilt when damaged, keyed by vocabulary and weights). The tiny CLIP
has random weights, so the matches are arbitrary but deterministic."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from PIL import Image

from engine.describe import CATEGORIES, MAX_PROMPT, Describer, Vocabulary, article
from engine.errors import InvalidSpec

SMALL = {
    "subjects": ["a cat", "a lighthouse"],
    "mediums": ["oil painting", "photograph"],
    "artists": ["Claude Monet", "Rembrandt"],
    "movements": ["impressionism", "baroque"],
    "flavors": ["highly detailed", "8k", "moody lighting", "pastel colors"],
}


class Counting:
    """A perceptor that counts its text encodes (everything else is the real one's)."""

    def __init__(self, perceptor) -> None:
        self._perceptor, self.texts = perceptor, 0

    def __getattr__(self, name):
        return getattr(self._perceptor, name)

    def encode_text(self, texts):
        self.texts += len(texts)
        return self._perceptor.encode_text(texts)


def _png(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=gen) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clip(pool):
    return pool.perceptor("tiny-clip")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("describe-cache")


@pytest.fixture(scope="module")
def describer(clip, cache_dir):
    return Describer(clip, cache_dir)


@pytest.fixture(scope="module")
def description(describer):
    return describer.describe(_png())


def test_the_vocabulary_has_thousands_of_unique_terms_in_every_category():
    vocabulary = Vocabulary.builtin()
    assert set(vocabulary.terms) == set(CATEGORIES) and len(vocabulary) >= 3000
    assert len(vocabulary.terms["artists"]) >= 1000 and len(vocabulary.terms["flavors"]) >= 1000
    for category, terms in vocabulary.terms.items():
        assert len(terms) >= 100, category
        assert len({t.casefold() for t in terms}) == len(terms), f"{category} repeats a term"
        assert all(t == t.strip() and t and not t.startswith("#") for t in terms), category
    assert len(vocabulary.digest) == 64 and vocabulary.digest == Vocabulary.builtin().digest


def test_articles_of_mediums():
    assert [article(t) for t in ["oil painting", "3D render", "8mm film still", "ukiyo-e print", "etching"]] == [
        "an",
        "a",
        "an",
        "a",
        "an",
    ]
    assert Vocabulary(SMALL).texts("mediums") == ["an oil painting", "a photograph"]
    assert Vocabulary(SMALL).texts("artists") == ["art by Claude Monet", "art by Rembrandt"]


def test_every_category_is_ranked_by_similarity(description, describer):
    for category in CATEGORIES:
        ranked = description.ranked[category]
        assert len(ranked) == describer.top
        similarities = [s for _, s in ranked]
        assert similarities == sorted(similarities, reverse=True), category
        assert description.best(category) == ranked[0][0]
        assert all(t in describer.vocabulary.terms[category] for t, _ in ranked)


def test_the_ranking_matches_clip_computed_directly(description, describer, clip):
    """CLIP's own preprocessing (open_clip's eval transform) and the whole category encoded in one batch."""
    import open_clip

    transform = open_clip.image_transform(clip.input_size, is_train=False)
    x = transform(Image.open(io.BytesIO(_png()))).unsqueeze(0)  # (1, 3, s, s), normalised
    with torch.no_grad():
        image = torch.nn.functional.normalize(clip.model.encode_image(x).float(), dim=-1)[0]
    texts = [f"{article(t)} {t}" for t in describer.vocabulary.terms["mediums"]]
    similarities = clip.encode_text(texts) @ image
    values, indices = similarities.topk(describer.top)
    expected = [describer.vocabulary.terms["mediums"][i] for i in indices.tolist()]
    got = description.ranked["mediums"]
    assert [t for t, _ in got[:5]] == expected[:5]
    assert [s for _, s in got] == pytest.approx(values.tolist(), abs=1e-4)


def test_the_prompt_is_short_and_made_of_the_best_terms(description):
    prompt = description.prompt
    assert prompt and len(prompt) <= MAX_PROMPT
    assert prompt.startswith(description.best("subjects") + ", ")
    medium, artist = description.best("mediums"), description.best("artists")
    assert f"{article(medium)} {medium} by {artist}" in prompt and description.best("movements") in prompt
    assert len(description.flavors) <= 3 and all(f in prompt for f in description.flavors)
    assert -1 <= description.prompt_similarity <= 1
    assert description.model == "tiny-clip"


def test_a_description_travels_as_json_and_pickle(description):
    import json
    import pickle

    assert pickle.loads(pickle.dumps(description)) == description
    data = json.loads(json.dumps(description.to_dict()))
    assert data["prompt"] == description.prompt and set(data["ranked"]) == set(CATEGORIES)
    assert data["ranked"]["artists"][0] == [description.best("artists"), description.ranked["artists"][0][1]]


def test_flavors_are_added_only_while_they_bring_the_prompt_closer(describer, description):
    target = describer.encode_image(_png())
    prompts = [description.prompt.rsplit(", ", i)[0] for i in range(len(description.flavors) + 1)][::-1]
    scores = (describer.encode_texts(prompts) @ target).tolist()
    assert scores == sorted(scores) and scores[-1] == pytest.approx(description.prompt_similarity, abs=1e-5)


def test_a_pil_image_is_described_like_its_bytes(describer, description):
    from_pil = describer.describe(Image.open(io.BytesIO(_png())))
    assert from_pil.prompt == description.prompt


def test_the_cache_is_written_once_and_loaded_without_encoding(describer, cache_dir, clip):
    assert describer.cache_path.parent == cache_dir and describer.cache_path.is_file()
    assert describer.cache_path.name.startswith("describe-tiny-clip-")
    assert [p.name for p in cache_dir.iterdir()] == [describer.cache_path.name]  # no temporary file left
    counting = Counting(clip)
    again = Describer(counting, cache_dir)
    assert counting.texts == 0
    assert again.cache_path == describer.cache_path
    for category in CATEGORIES:
        assert torch.equal(again.embeddings[category], describer.embeddings[category])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong shapes"])
def test_a_damaged_cache_is_rebuilt(tmp_path, clip, damage):
    vocabulary = Vocabulary(SMALL)
    first = Describer(clip, tmp_path, vocabulary)
    path = first.cache_path
    if damage == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        saved = torch.load(path, weights_only=True)
        saved["embeddings"]["artists"] = saved["embeddings"]["artists"][:1]
        torch.save(saved, path)
    counting = Counting(clip)
    rebuilt = Describer(counting, tmp_path, vocabulary)
    assert counting.texts == len(vocabulary)
    assert torch.load(path, weights_only=True)["embeddings"]["artists"].shape[0] == 2
    for category in CATEGORIES:
        assert torch.allclose(rebuilt.embeddings[category], first.embeddings[category], atol=1e-6)


def test_the_cache_file_follows_the_vocabulary_and_the_weights(tmp_path, clip):
    vocabulary = Vocabulary(SMALL)
    changed = Vocabulary({**SMALL, "flavors": [*SMALL["flavors"], "volumetric lighting"]})
    assert changed.digest != vocabulary.digest
    a = Describer(clip, tmp_path, vocabulary).cache_path
    b = Describer(clip, tmp_path, changed).cache_path
    assert a != b and a.is_file() and b.is_file()

    retrained = copy.deepcopy(clip)
    with torch.no_grad():
        retrained.model.text_projection.add_(1e-3)
    c = Describer(retrained, tmp_path, vocabulary)
    assert c.cache_path != a and c.cache_path.name.startswith("describe-tiny-clip-")
    assert Describer(copy.deepcopy(clip), tmp_path, vocabulary).cache_path == a  # same weights, same cache


def test_an_unwritable_cache_folder_is_not_fatal(tmp_path, clip):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    describer = Describer(clip, blocked, Vocabulary(SMALL))
    assert not describer.cache_path.exists()
    assert describer.describe(_png()).prompt


@pytest.mark.parametrize("data", [b"", b"garbage bytes, not a picture", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_undecodable_pictures_are_refused_with_a_sentence(describer, data):
    with pytest.raises(InvalidSpec, match=r"^The attachment is not a picture that can be read .*\.$"):
        describer.describe(data)


def test_oversized_pictures_are_refused_before_decoding(describer):
    with pytest.raises(InvalidSpec, match="too long and thin"):
        describer.describe(_png(width=900, height=100))
