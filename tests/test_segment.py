import numpy as np
import pytest

from irs.models import build_tiny_sam
from irs.segment import MaskProposal, SamSegmenter, postprocess, segment_image, segment_images
from irs.synthetic import make_scenes


def square(side: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((side, side), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_real_automatic_mask_generator_with_tiny_sam(test_settings):
    segmenter = SamSegmenter(build_tiny_sam(), test_settings)
    pixels = make_scenes(1, seed=5, side=160)[0].image
    segments = segment_image(segmenter, pixels, test_settings)
    assert 1 <= len(segments) <= test_settings.max_segments
    for i, seg in enumerate(segments):
        assert seg.index == i
        mask = seg.mask()
        assert mask.shape == (160, 160) and mask.any()
        x0, y0, x1, y1 = seg.bbox
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert abs(seg.area - mask.mean()) < 1e-6
        assert seg.area >= test_settings.min_segment_area


def test_tiny_sam_is_the_same_in_every_build():
    a, b = build_tiny_sam(), build_tiny_sam()
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert np.array_equal(pa.numpy(), pb.numpy()), na


def test_postprocess_drops_small_and_duplicate_masks_and_keeps_best_n():
    side = 100
    big = square(side, 0, 0, 50, 50)
    near_copy = square(side, 0, 0, 50, 49)  # IoU 0.98 with big
    other = square(side, 60, 60, 100, 100)
    third = square(side, 0, 60, 30, 100)
    tiny = square(side, 90, 0, 92, 2)  # 4 pixels = 0.0004 of the image
    proposals = [
        MaskProposal(near_copy, 0.8, 0.8),
        MaskProposal(big, 0.9, 0.9),
        MaskProposal(other, 0.7, 0.9),
        MaskProposal(third, 0.5, 0.5),
        MaskProposal(tiny, 0.99, 0.99),
    ]
    segs = postprocess(proposals, min_area=0.001, dedup_iou=0.85, max_segments=2)
    assert [s.bbox for s in segs] == [(0.0, 0.0, 0.5, 0.5), (0.6, 0.6, 1.0, 1.0)]
    assert segs[0].predicted_iou == pytest.approx(0.9)
    segs = postprocess(proposals, min_area=0.001, dedup_iou=0.99, max_segments=10)
    assert len(segs) == 4  # the near copy survives a looser dedup threshold; the tiny one never does


def test_postprocess_of_nothing():
    assert postprocess([], 0.01, 0.9, 5) == []


def test_batched_generator_with_tiny_sam(test_settings):
    from irs.segment import BatchedSamSegmenter

    settings = test_settings.replace(sam_generator="batched", pred_iou_thresh=0.0, stability_score_thresh=0.0)
    segmenter = BatchedSamSegmenter(build_tiny_sam(), settings)
    images = [s.image for s in make_scenes(3, seed=8, side=160)]
    one_by_one = [segment_image(segmenter, img, settings) for img in images]
    together = segment_images(segmenter, images, settings)
    assert [len(x) for x in one_by_one] == [len(x) for x in together]
    for a, b in zip(one_by_one, together):
        assert all(np.array_equal(x.mask(), y.mask()) for x, y in zip(a, b))  # batching changes nothing
    assert all(1 <= len(x) <= settings.max_segments for x in together)
    for seg in together[0]:
        assert seg.mask().shape == (160, 160) and seg.mask().any()


def test_batched_generator_applies_the_quality_thresholds(test_settings):
    from irs.segment import BatchedSamSegmenter

    strict = test_settings.replace(pred_iou_thresh=1.0)  # nothing can pass
    assert BatchedSamSegmenter(build_tiny_sam(), strict).masks(make_scenes(1, seed=8, side=96)[0].image) == []


def test_components_segmenter_finds_every_synthetic_object():
    from irs.geometry import box_iou
    from irs.segment import ComponentsSegmenter

    segmenter, found, total = ComponentsSegmenter(), 0, 0
    for scene in make_scenes(20, seed=12):
        segments = postprocess(segmenter.masks(scene.image), 0.002, 0.85, 32)
        for obj in scene.objects:
            total += 1
            found += any(box_iou(s.bbox, obj.bbox) >= 0.5 for s in segments)
    assert found / total >= 0.95
