import numpy as np
import pytest
import torch
from PIL import Image

from irs.benchmark import object_recall
from irs.geometry import fit_mask, mask_iou
from irs.models import build_tiny_sam
from irs.segment import ComponentsSegmenter, MaskProposal, SamSegmenter, postprocess, segment_image, segment_images
from irs.settings import load_settings
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


# ---- the weight-free segmenter's background filter -------------------------------------------------------


def demo_segments(segmenter, pixels: np.ndarray) -> list:
    """What indexing with the demo profile stores for an image."""
    return segment_image(segmenter, pixels, load_settings({"profile": "demo"}, environ={}))


def disc(side: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] / side
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def best_iou(segments: list, mask: np.ndarray) -> float:
    return max((mask_iou(fit_mask(s.mask(), *mask.shape), mask) for s in segments), default=0.0)


def test_background_filter_keeps_every_object_and_drops_the_background():
    scenes = make_scenes(12, seed=12)
    unfiltered = [demo_segments(ComponentsSegmenter(background_filter=False), s.image) for s in scenes]
    filtered = [demo_segments(ComponentsSegmenter(), s.image) for s in scenes]
    assert object_recall(scenes, unfiltered) == 1.0
    assert object_recall(scenes, filtered) == 1.0
    # without the filter the ground fills the list (up to max_segments); with it, little beyond the objects
    objects = sum(len(s.objects) for s in scenes)
    assert sum(map(len, unfiltered)) > 5 * objects
    assert sum(map(len, filtered)) <= objects + len(scenes) // 2
    assert all(len(f) < len(u) for f, u in zip(filtered, unfiltered))


def test_background_filter_only_removes_regions():
    pixels = make_scenes(1, seed=2)[0].image
    regions = ComponentsSegmenter(edge_reach=0).regions(pixels)
    unfiltered = ComponentsSegmenter(background_filter=False).masks(pixels)
    filtered = ComponentsSegmenter(edge_reach=0, fragment_reach=0).masks(pixels)  # the filter alone
    assert [p.mask.tobytes() for p, _ in regions] == [p.mask.tobytes() for p in unfiltered]
    assert [p.mask.tobytes() for p in filtered] == [p.mask.tobytes() for p, why in regions if why is None]
    assert {why for _, why in regions} - {None} <= {"spans the frame", "low contrast", "background colour"}


def test_flat_objects_on_a_plain_ground_survive_even_at_the_border():
    side = 256
    pixels = np.full((side, side, 3), 235, np.uint8)
    circle, corner, cut = disc(side, 0.5, 0.5, 0.15), square(side, 0, 0, 60, 80), square(side, 150, 200, 230, side)
    pixels[circle], pixels[corner], pixels[cut] = (200, 30, 30), (20, 20, 20), (30, 60, 200)
    segments = demo_segments(ComponentsSegmenter(), pixels)
    assert len(segments) == 3
    for mask in (circle, corner, cut):  # in the middle, tucked into a corner, cut off by the bottom
        assert best_iou(segments, mask) > 0.95


def test_objects_on_a_gradient_and_on_noise_survive():
    side = 256
    yy, xx = np.mgrid[0:side, 0:side] / side
    gradient = np.stack([30 + 200 * xx, 60 + 80 * yy, 200 - 170 * xx], -1).astype(np.uint8)
    noise = np.clip(128 + np.random.default_rng(0).normal(0, 35, (side, side, 3)), 0, 255).astype(np.uint8)
    for ground in (gradient, noise):
        pixels = ground.copy()
        shapes = [disc(side, 0.25, 0.3, 0.1), square(side, 128, 150, 180, 215), disc(side, 0.75, 0.25, 0.08)]
        for mask, colour in zip(shapes, [(240, 240, 40), (20, 150, 60), (40, 60, 220)]):
            pixels[mask] = colour
        segments = demo_segments(ComponentsSegmenter(), pixels)
        assert all(best_iou(segments, mask) > 0.9 for mask in shapes)
        assert len(segments) <= len(shapes) + 1


PLACES = [
    ((60, 60), (240, 200, 40)),
    ((170, 70), (40, 90, 220)),
    ((80, 170), (220, 60, 160)),
    ((170, 170), (30, 160, 60)),
]


def shapes_on_grain(
    kinds: list[str], size: int, outlined: bool, side: int = 240
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Four small shapes on a grainy ground, with a 1-pixel dark outline (as in the varied scenes) when
    `outlined`, and their masks."""
    import cv2

    from irs.synthetic import _shape_mask

    pixels = np.clip(150 + np.random.default_rng(3).normal(0, 4, (side, side, 3)), 0, 255)
    shapes = []
    for (centre, colour), shape in zip(PLACES, kinds):
        mask = np.asarray(_shape_mask(shape, centre, size, side, 0.3)) > 0
        pixels[mask] = colour
        if outlined:
            solid = mask.astype(np.uint8)
            pixels[(solid - cv2.erode(solid, np.ones((3, 3), np.uint8))).astype(bool)] = np.array(colour) * 0.25
        shapes.append(mask)
    return pixels.astype(np.uint8), shapes


def small_shapes() -> tuple[np.ndarray, list[np.ndarray]]:
    """Small shapes with points and thin parts (star, arrow, cross, ring) on a grainy ground, and their masks."""
    return shapes_on_grain(["star", "arrow", "cross", "ring"], 14, outlined=False)


def test_edges_the_median_filter_took_are_regrown():
    pixels, shapes = small_shapes()
    regrown = demo_segments(ComponentsSegmenter(), pixels)
    filtered = demo_segments(ComponentsSegmenter(edge_reach=0), pixels)
    assert len(regrown) == len(filtered) == len(shapes)
    for mask in shapes:  # points and thin arms come back; the ring keeps its hole
        assert best_iou(regrown, mask) > 0.95
        assert best_iou(regrown, mask) > best_iou(filtered, mask)
    assert min(best_iou(filtered, mask) for mask in shapes) < 0.93


def test_regrowing_adds_nothing_of_a_plain_ground():
    side = 240
    pixels = np.full((side, side, 3), 150, np.uint8)
    shape = disc(side, 0.5, 0.5, 0.05)
    pixels[shape] = (40, 90, 220)
    regrown = demo_segments(ComponentsSegmenter(), pixels)
    assert len(regrown) == 1
    assert not (fit_mask(regrown[0].mask(), side, side) & ~shape).any()
    assert best_iou(regrown, shape) > 0.95


def outlined_shapes() -> tuple[np.ndarray, list[np.ndarray]]:
    """Small outlined shapes (star, arrow, cross, heart) on a grainy ground, and their masks."""
    return shapes_on_grain(["star", "arrow", "cross", "heart"], 16, outlined=True)


def test_fragments_along_an_object_join_it():
    pixels, shapes = outlined_shapes()
    # without the rule, the median filter leaves pieces of outline (and of points) as regions of their own
    apart = demo_segments(ComponentsSegmenter(fragment_reach=0), pixels)
    assert len(apart) > len(shapes)
    assert min(best_iou(apart, mask) for mask in shapes) < 0.8
    joined = demo_segments(ComponentsSegmenter(), pixels)
    assert len(joined) == len(shapes)
    for mask in shapes:  # one segment each, outline and points included
        assert best_iou(joined, mask) > 0.95


def test_objects_side_by_side_stay_apart():
    side = 256
    pixels = np.clip(150 + np.random.default_rng(4).normal(0, 4, (side, side, 3)), 0, 255).astype(np.uint8)
    shapes = [
        square(side, 140, 60, 200, 120),  # two blues a few pixels apart
        square(side, 140, 126, 190, 176),
        square(side, 20, 200, 100, 250),  # a small green square against a large yellow one
        square(side, 100, 215, 120, 235),
        disc(side, 0.25, 0.25, 0.1),  # a red disc with a pink one at its edge
        disc(side, 0.25 + 0.1 + 0.03, 0.25, 0.03),
    ]
    colours = [(40, 90, 220), (50, 100, 210), (240, 200, 40), (30, 160, 60), (200, 30, 30), (230, 90, 160)]
    for mask, colour in zip(shapes, colours):
        pixels[mask] = colour
    segments = demo_segments(ComponentsSegmenter(), pixels)
    apart = demo_segments(ComponentsSegmenter(fragment_reach=0), pixels)
    assert len(segments) == len(apart) == len(shapes)
    for mask in shapes:  # each its own segment, as without the rule
        assert best_iou(segments, mask) == best_iou(apart, mask) > 0.85


def test_a_grey_square_as_grey_as_the_noise_around_it_survives_by_its_texture():
    side = 256
    pixels = np.clip(128 + np.random.default_rng(1).normal(0, 35, (side, side, 3)), 0, 255).astype(np.uint8)
    flat = square(side, 140, 140, 220, 220)
    pixels[flat] = 128  # the noise's own mean colour: only its smoothness sets it apart
    assert best_iou(demo_segments(ComponentsSegmenter(), pixels), flat) > 0.8


def test_a_faint_object_on_a_ground_of_many_colours_gets_its_own_segment():
    """Nine far-apart colour bands and, on the grey one, a small square 30 levels lighter (ΔE about 12):
    with only eight colour clusters the square shared the grey band's and was never cut out."""
    height, width = 192, 288
    bands = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (220, 220, 60), (120, 120, 120)]
    bands += [(200, 80, 200), (60, 200, 200), (30, 30, 30), (240, 240, 240)]
    pixels = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(bands):
        pixels[:, i * 32 : (i + 1) * 32] = colour
    square = np.zeros((height, width), bool)
    square[88:104, 136:152] = True
    pixels[square] = (150, 150, 150)
    assert best_iou(demo_segments(ComponentsSegmenter(), pixels), square) > 0.7
    assert best_iou(demo_segments(ComponentsSegmenter(clusters=8), pixels), square) < 0.1


def test_the_demo_profile_keeps_the_smallest_synthetic_shapes():
    """The varied scenes' smallest shapes cover about 0.0012-0.002 of the image; they are kept."""
    pixels = np.full((256, 256, 3), (90, 110, 90), np.uint8)
    dot = disc(256, 0.3, 0.6, 0.022)  # 0.0015 of the image
    pixels[dot] = (220, 60, 60)
    assert 0.0012 < dot.mean() < 0.002
    assert best_iou(demo_segments(ComponentsSegmenter(), pixels), dot) > 0.7


def test_an_image_of_background_only_gives_no_segments():
    side = 256
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:side, 0:side] / side
    # a muted texture like the synthetic scenes' ground: coarse colour blobs plus fine grain
    coarse = Image.fromarray(np.clip(128 + rng.normal(0, 12, (6, 6, 3)), 0, 255).astype(np.uint8))
    blobs = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), np.float32) - 128
    texture = np.clip(135 + blobs + rng.normal(0, 5, (side, side, 1)), 0, 255).astype(np.uint8)
    grounds = {
        "texture": texture,
        "gradient": np.stack([255 * xx, 255 * yy, 128 + 0 * xx], -1).astype(np.uint8),
        "noise": np.clip(128 + rng.normal(0, 35, (side, side, 3)), 0, 255).astype(np.uint8),
        "sky over grass": np.where(yy[..., None] < 0.5, [90, 150, 240], [60, 140, 50]).astype(np.uint8),
    }
    for name, pixels in grounds.items():
        unfiltered = demo_segments(ComponentsSegmenter(background_filter=False), pixels)
        filtered = demo_segments(ComponentsSegmenter(), pixels)
        assert len(filtered) <= 1, (name, len(filtered), len(unfiltered))


def test_a_zero_iou_threshold_filters_nothing_in_either_generator(test_settings):
    """As in segment_anything, pred_iou_thresh 0 means no filter: random weights predict IoUs below 0, and
    the batched generator used to drop those that the stock one kept."""
    from irs.segment import BatchedSamSegmenter, SamSegmenter

    torch.manual_seed(0)
    sam = build_tiny_sam().eval()
    s = test_settings.replace(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    image = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    stock = SamSegmenter(sam, s).masks(image)
    assert any(p.predicted_iou <= 0 for p in stock)  # the case in question is present
    assert len(BatchedSamSegmenter(sam, s).masks(image)) == len(stock) == 4 * 3
