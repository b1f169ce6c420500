import logging

import numpy as np
import pytest
import torch
from PIL import Image

from irs.embed import Embedder
from irs.geometry import rle_encode
from irs.models import load_clip
from irs.records import Segment


@pytest.fixture(scope="module")
def clip():
    return load_clip("irs-tiny", "", "cpu")


def test_images_and_texts_share_a_normalised_space(clip):
    emb = Embedder(clip, batch_size=2)
    images = [Image.new("RGB", (50, 30), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    vecs = emb.images(images)
    texts = emb.texts(["a red circle", "a green square"])
    assert vecs.shape == (3, emb.dim) and texts.shape == (2, emb.dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])


def test_random_models_are_identical_across_loads(clip):
    again = load_clip("irs-tiny", "", "cpu")
    a = Embedder(clip).texts(["a dog"])
    b = Embedder(again).texts(["a dog"])
    assert np.allclose(a, b)


def test_over_long_query_is_truncated_with_a_warning(clip, caplog):
    emb = Embedder(clip)
    with caplog.at_level(logging.WARNING):
        emb.texts(["a photo of " + "very " * 100 + "red car"])
    assert "over the model's 77" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        emb.texts(["a short query"])
    assert caplog.text == ""


def _segment(mask: np.ndarray, bbox) -> Segment:
    return Segment(
        bbox=bbox, centroid=(0.5, 0.5), area=float(mask.mean()), mask_rle=rle_encode(mask), mask_shape=mask.shape
    )


def as_rgb(emb: Embedder, crops) -> np.ndarray:
    """Normalised crops back to 0..255 RGB, HxWx3 per crop."""
    mean = np.array(emb.mean)[None, :, None, None]
    std = np.array(emb.std)[None, :, None, None]
    return ((crops.numpy() * std + mean) * 255).transpose(0, 2, 3, 1)


def test_segment_crops_neutralise_pixels_outside_the_mask(clip):
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[:, :] = (0, 200, 0)  # green background
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    pixels[mask] = (250, 0, 0)
    seg = _segment(mask, (0.4, 0.4, 0.6, 0.6))
    emb = Embedder(clip, background="grey", padding=0.5)
    crops = emb.segment_pixels(pixels, [seg])
    assert tuple(crops.shape) == (1, 3, emb.size, emb.size)  # square, at the model's input size
    rgb = as_rgb(emb, crops)[0]
    grey = np.array(emb.mean) * 255
    assert np.abs(rgb[2, 2] - grey).max() < 2  # context outside the mask: the model's mean colour
    assert np.abs(rgb[emb.size // 2, emb.size // 2] - (250, 0, 0)).max() < 3  # the segment itself is kept
    kept = as_rgb(
        Embedder(clip, background="keep", padding=0.5),
        Embedder(clip, background="keep", padding=0.5).segment_pixels(pixels, [seg]),
    )[0]
    assert np.abs(kept[2, 2] - (0, 200, 0)).max() < 3
    blur_emb = Embedder(clip, background="blur", padding=0.5)
    blurred = as_rgb(blur_emb, blur_emb.segment_pixels(pixels, [seg]))[0]
    assert blurred[2, 2, 1] > 150  # blurred context keeps its colour


def test_segment_crops_outside_the_image_are_grey_and_small_masks_fit(clip):
    pixels = np.full((200, 100, 3), 255, np.uint8)  # tall white image
    mask = np.zeros((200, 100), bool)
    mask[:, :] = True  # the whole image: its square crop reaches past both sides
    emb = Embedder(clip, padding=0.0)
    full = as_rgb(emb, emb.segment_pixels(pixels, [_segment(mask, (0, 0, 1, 1))]))[0]
    assert np.abs(full[emb.size // 2, 1] - np.array(emb.mean) * 255).max() < 3  # beyond the image: grey
    assert full[emb.size // 2, emb.size // 2].min() > 250
    small = mask[::4, ::4]  # a mask stored at a quarter of the image size gives (nearly) the same crop
    again = as_rgb(emb, emb.segment_pixels(pixels, [_segment(small, (0, 0, 1, 1))]))[0]
    assert np.abs(full - again).mean() < 2


def test_segments_embed_to_unit_vectors(clip):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 5:50] = True
    vecs = Embedder(clip).segments(pixels, [_segment(mask, (5 / 64, 10 / 64, 50 / 64, 30 / 64))] * 3)
    assert vecs.shape == (3, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_crops_of_several_images_embed_together_as_each_alone(clip):
    emb = Embedder(clip)
    rng = torch.Generator().manual_seed(0)
    groups = [torch.randn((n, 3, emb.size, emb.size), generator=rng) for n in (3, 0, 2)]
    together = emb.encode_groups(groups)
    assert [len(v) for v in together] == [3, 0, 2]
    for group, vectors in zip(groups, together):
        assert np.allclose(vectors, emb.encode_pixels(group), atol=1e-5)


def test_unknown_background_is_refused(clip):
    with pytest.raises(ValueError, match="segment_background"):
        Embedder(clip, background="pink")


TEXTS_OF_EVERY_LENGTH = [
    "",
    "dog",
    "a red circle left of a blue square",
    "a photo of " + "very " * 20 + "red car",
    "a photo of " + "very " * 100 + "red car",  # cut to the full context: end-of-text at the last position
]


@pytest.mark.parametrize("name", ["irs-tiny", "irs-small"])
def test_text_vectors_are_open_clips_though_only_the_query_tokens_run(name, caplog):
    """The truncated text tower gives open_clip's own encode_text vectors, alone and in mixed-length batches.

    Normalised vectors (what search uses) agree to 1e-6; a batch whose longest text fills the context runs
    every position and is bit-identical. (open_clip's own vectors differ as much between a text encoded alone
    and in a batch: matrix shapes change the float rounding.)"""
    import torch

    from irs.text_tower import can_truncate_text, encode_text_truncated

    model = load_clip(name, "", "cpu")
    assert can_truncate_text(model.model)
    tokens = model.tokenizer(TEXTS_OF_EVERY_LENGTH)
    assert int(tokens.argmax(dim=-1).max()) == tokens.shape[1] - 1  # one text does fill the context

    def unit(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(v, dim=-1)

    with torch.inference_mode():
        stock = model.model.encode_text(tokens)
        assert torch.equal(encode_text_truncated(model.model, tokens), stock)
        for i, text in enumerate(TEXTS_OF_EVERY_LENGTH):
            alone = model.model.encode_text(tokens[i : i + 1])
            one = encode_text_truncated(model.model, tokens[i : i + 1])
            assert torch.allclose(unit(one), unit(alone), atol=1e-6, rtol=0), text
        short = tokens[:3]  # a batch of short texts: only their first few positions run
        assert torch.allclose(
            unit(encode_text_truncated(model.model, short)), unit(model.model.encode_text(short)), atol=1e-6, rtol=0
        )
    with caplog.at_level(logging.ERROR):
        vectors = Embedder(model).texts(TEXTS_OF_EVERY_LENGTH)
    assert np.allclose(vectors, unit(stock).numpy(), atol=1e-6, rtol=0)


def test_text_towers_that_are_not_causal_keep_the_stock_encoder(clip):
    """A text tower that attends both ways (or pools another token) must not be truncated."""
    import copy

    from irs.text_tower import can_truncate_text

    both_ways = copy.deepcopy(clip.model)
    both_ways.attn_mask = None
    assert not can_truncate_text(both_ways)
    first_token = copy.deepcopy(clip.model)
    first_token.text_pool_type = "first"
    assert not can_truncate_text(first_token)
    emb = Embedder(clip)
    emb._truncates = False
    assert np.allclose(emb.texts(["a dog"]), Embedder(clip).texts(["a dog"]), atol=1e-6)


@pytest.mark.parametrize("name", ["irs-tiny", "irs-small"])
def test_bfloat16_queries_point_where_float32_ones_do_and_leave_images_alone(name):
    """text_dtype bfloat16 runs a bf16 copy of the text tower only: query vectors within 1e-3 cosine of
    float32's (each query's own float32 vector the nearest), image vectors bit-identical, the model untouched."""
    model = load_clip(name, "", "cpu")
    exact, fast = Embedder(model), Embedder(model, text_dtype="bfloat16")
    texts = TEXTS_OF_EVERY_LENGTH + ["a red circle on the left", "a dog to the left of a bicycle"]
    a, b = exact.texts(texts), fast.texts(texts)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.999 and not np.array_equal(a, b)  # bf16 arithmetic did run
    assert (np.argmax(b @ a.T, axis=1) == np.arange(len(texts))).all()
    assert next(model.model.transformer.parameters()).dtype == torch.float32
    images = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 120, 255)]]
    assert np.array_equal(exact.images(images), fast.images(images))


def test_bfloat16_queries_on_a_tower_the_copy_cannot_stand_in_for(clip):
    """A text tower that is not truncated (not causal) still answers in bf16, through autocast."""
    exact, fast = Embedder(clip), Embedder(clip, text_dtype="bfloat16")
    fast._text_tower, fast._truncates = None, False
    a, b = exact.texts(["a dog", "a red car"]), fast.texts(["a dog", "a red car"])
    assert ((a * b).sum(axis=1) > 0.999).all()


def test_the_text_dtype_setting_reaches_the_indexs_queries(test_settings):
    from irs.index import Index

    exact, fast = Index(test_settings), Index(test_settings.replace(text_dtype="bfloat16"))
    try:
        a, b = exact.embedder.texts(["a red circle on the left"]), fast.embedder.texts(["a red circle on the left"])
        assert not np.array_equal(a, b) and float((a * b).sum()) > 0.999
    finally:
        exact.close()
        fast.close()
