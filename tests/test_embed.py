import logging

import numpy as np
import pytest
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


def test_segment_crop_neutralises_pixels_outside_the_mask(clip):
    pixels = np.zeros((100, 100, 3), np.uint8)
    pixels[:, :] = (0, 200, 0)  # green background
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    pixels[mask] = (250, 0, 0)
    seg = _segment(mask, (0.4, 0.4, 0.6, 0.6))
    grey = Embedder(clip, background="grey", padding=0.5).segment_crops(pixels, [seg])[0]
    arr = np.asarray(grey)
    assert arr.shape[0] == arr.shape[1]  # padded square for CLIP's centre crop
    assert tuple(arr[0, 0]) == Embedder(clip).grey  # context pixel, outside the mask: grey
    assert tuple(arr[arr.shape[0] // 2, arr.shape[1] // 2]) == (250, 0, 0)  # the segment itself is kept
    kept = np.asarray(Embedder(clip, background="keep", padding=0.5).segment_crops(pixels, [seg])[0])
    assert tuple(kept[0, 0]) == (0, 200, 0)
    blurred = np.asarray(Embedder(clip, background="blur", padding=0.5).segment_crops(pixels, [seg])[0])
    assert blurred[0, 0, 1] > 100  # blurred context keeps its colour


def test_unknown_background_is_refused(clip):
    with pytest.raises(ValueError, match="segment_background"):
        Embedder(clip, background="pink")
