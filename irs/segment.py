"""Segment: split an image into regions. `SamSegmenter` runs Segment Anything's automatic mask generator.

Every segmenter returns masks; `postprocess` turns them into the Segments irs stores: small ones
dropped, near-duplicates dropped by mask IoU, the best N kept, each with its box, centroid and area.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from irs.geometry import mask_box, mask_centroid, rle_encode, shrink_mask
from irs.pipeline import chunks
from irs.records import Segment
from irs.settings import Settings


@dataclass
class MaskProposal:
    """A raw mask proposed by a segmenter, with its quality scores (before `postprocess` keeps or drops it)."""

    mask: np.ndarray  # HxW bool at working resolution
    predicted_iou: float = 1.0
    stability_score: float = 1.0


class Segmenter(Protocol):
    """Anything that turns HxWx3 uint8 pixels into mask proposals."""

    name: str

    def masks(self, pixels: np.ndarray) -> list[MaskProposal]: ...


class SamSegmenter:
    """Segment Anything's SamAutomaticMaskGenerator with irs's settings."""

    def __init__(self, sam: object, settings: Settings) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        self.name = f"sam:{settings.sam_model_type}"
        self.generator = SamAutomaticMaskGenerator(
            sam,
            points_per_side=settings.points_per_side,
            points_per_batch=settings.points_per_batch,
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
            box_nms_thresh=settings.box_nms_thresh,
            min_mask_region_area=settings.min_mask_region_area,
            output_mode="binary_mask",
        )

    def masks(self, pixels: np.ndarray) -> list[MaskProposal]:
        import torch

        with torch.inference_mode():
            annotations = self.generator.generate(pixels)
        return [
            MaskProposal(a["segmentation"], float(a["predicted_iou"]), float(a["stability_score"])) for a in annotations
        ]


class BatchedSamSegmenter:
    """Segment Anything's automatic masks, computed for speed: the whole point grid goes through the mask
    decoder in large batches, quality filters and box NMS run on the model's device on the low-resolution
    mask logits, and only the masks that survive are upsampled and copied out. Several images share one
    encoder batch (`masks_batch`).

    It differs from SamAutomaticMaskGenerator in two places: the stability score is computed on the
    256x256 logits rather than on full-resolution masks, and there are no crop layers. The stock
    generator (sam_generator = "stock") spends most of its time converting every candidate mask to
    run-length form on the CPU, one by one; this one never does.
    """

    def __init__(self, sam: object, settings: Settings) -> None:
        from segment_anything.utils.amg import build_point_grid
        from segment_anything.utils.transforms import ResizeLongestSide

        self.name = f"sam-batched:{settings.sam_model_type}"
        self.sam = sam
        self.settings = settings
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.grid = build_point_grid(settings.points_per_side)  # (n, 2) in 0..1
        self.keep = max(3 * settings.max_segments, 16)  # proposals kept after NMS, before irs's dedup

    def masks(self, pixels: np.ndarray) -> list[MaskProposal]:
        return self.masks_batch([pixels])[0]

    def masks_batch(self, images: list[np.ndarray]) -> list[list[MaskProposal]]:
        import torch

        sam = self.sam
        device = next(sam.parameters()).device
        from irs.models import autocast

        with torch.inference_mode(), autocast(device):
            resized = [self.transform.apply_image(img) for img in images]
            batch = torch.stack(
                [sam.preprocess(torch.as_tensor(r, device=device).permute(2, 0, 1).float()) for r in resized]
            )
            embeddings = sam.image_encoder(batch)
            return [
                self._decode(embeddings[i : i + 1], img.shape[:2], resized[i].shape[:2], device)
                for i, img in enumerate(images)
            ]

    def _decode(
        self, embedding: object, original: tuple[int, int], input_size: tuple[int, int], device: object
    ) -> list[MaskProposal]:
        import torch
        from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score
        from torchvision.ops import batched_nms

        sam, s = self.sam, self.settings
        h, w = original
        points = self.transform.apply_coords(self.grid * np.array([w, h]), original)
        coords = torch.as_tensor(points, dtype=torch.float32, device=device)[:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=device)
        dense_pe = sam.prompt_encoder.get_dense_pe()
        logits, scores = [], []
        for batch_coords, batch_labels in zip(chunks(coords, s.points_per_batch), chunks(labels, s.points_per_batch)):
            sparse, dense = sam.prompt_encoder(points=(batch_coords, batch_labels), boxes=None, masks=None)
            low_res, iou = sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            low_res, iou = low_res.flatten(0, 1).float(), iou.flatten().float()
            stability = calculate_stability_score(low_res, sam.mask_threshold, 1.0)
            # as segment_anything does: a threshold of 0 means no filter (a predicted IoU may be <= 0)
            keep = (iou > s.pred_iou_thresh) | (s.pred_iou_thresh <= 0)
            keep &= stability >= s.stability_score_thresh
            logits.append(low_res[keep])
            scores.append((iou * stability)[keep])
        logits_t, scores_t = torch.cat(logits), torch.cat(scores)
        if len(logits_t) == 0:
            return []
        boxes = batched_mask_to_box(logits_t > sam.mask_threshold).float()
        keep = batched_nms(boxes, scores_t, torch.zeros_like(scores_t, dtype=torch.int64), s.box_nms_thresh)
        keep = keep[: self.keep]
        # upsample only the survivors, straight to the stored mask size: little to copy off the device
        scale = min(1.0, s.mask_max_side / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        padded = torch.nn.functional.interpolate(
            logits_t[keep][:, None], (sam.image_encoder.img_size,) * 2, mode="bilinear", align_corners=False
        )[..., : input_size[0], : input_size[1]]
        full = torch.nn.functional.interpolate(padded, size, mode="bilinear", align_corners=False)[:, 0]
        full = (full > sam.mask_threshold).cpu().numpy()
        kept_scores = scores_t[keep].cpu().numpy()
        return [MaskProposal(m, float(sc), 1.0) for m, sc in zip(full, kept_scores) if m.any()]


class ComponentsSegmenter:
    """A segmenter that needs no weights: colour clusters (k-means in Lab), split into connected regions.

    It finds regions of near-uniform colour: right for flat objects on a textured ground (the synthetic
    benchmark), a rough cut for photos, and it needs no weights and no GPU. A region's score is its
    colour uniformity (predicted_iou) and how compact it is (stability_score), so flat, solid regions
    rank before background patches.

    k-means also slices the background (a texture, a gradient, a wall) into many regions that are no
    object. With `background_filter` on, a region is dropped as background when any of these holds
    (`regions` says which; colours are compared as CIE76 distances, ΔE, in Lab):

    - **spans the frame**: it reaches from one side of the image to the opposite one and at least
      `frame_perimeter` of its outline runs along the border: the sky, a floor, a wall, the ground the
      picture is framed on. An object cut off by one side, or tucked into a corner, is not judged by this;
    - **low contrast**: the colour step across its outline is under `min_contrast` ΔE (measured place by
      place along the outline, `_Surroundings.edge_contrast`) and its texture is no different from its
      surroundings' (`_differ`): k-means cut it out of a smooth surface (a texture, a gradient), nothing
      edges it;
    - **background colour**: its colour (within `min_contrast` ΔE) covers `frame_colour_share` of the
      image's frame (a band `frame_width` of the side wide) *outside the region itself*, with the frame's
      texture: the colour that surrounds everything, e.g. a patch of textured ground or the ground seen
      through a hole. Its own border pixels are left out, so an object that touches the border is not
      judged by itself.

    The median filter that calms textures before k-means also moves edges by up to its radius (2 pixels): thin
    tips and corners (a star's points, an arrow's head, an outline) are cut off, which on small objects turns
    one shape into another for CLIP. So each kept region is regrown by `edge_reach` pixels, with the
    pixels of that band whose unsmoothed colour is nearer the region's than that just beyond the band
    (`regrow_edge`).

    A region that lies along another kept region is a piece of that object, not an object: a dark outline
    around its fill, a point or an arm the median filter cut off. Alone it reads to CLIP as another shape (a
    star's point as a triangle, an outline as a dark ring) and can win a query. With `fragment_reach` on, such a
    region (at least `fragment_share` of its pixels within `fragment_reach` pixels of the other) is joined to
    it (`absorb_fragments`); a compact object beside another has only a thin strip that near, and stays.
    Ground seen through a ring's hole is never joined to the ring.

    Twelve colour clusters, not eight: with eight, a small object whose colour is near the ground's or a
    neighbour's shared their cluster and had no region of its own (26 of a development gallery's 1,016 objects,
    13 with twelve); the per-region tests make it cost about 1.5x the time.

    ΔE 10 is a difference seen at a glance (2.3 is the least one can see); the surroundings reach 2% of the
    image's side; shares are fractions of the frame. A flat object on a noisy ground of its own mean colour
    is kept by its texture. With the filter off, `masks` gives exactly the regions it gave before the filter
    existed (bench/segmenter.py measures both).
    """

    name = "components"

    def __init__(
        self,
        clusters: int = 12,
        max_area: float = 0.5,
        background_filter: bool = True,
        min_contrast: float = 10.0,
        frame_perimeter: float = 0.25,
        frame_colour_share: float = 0.1,
        frame_width: float = 0.03,
        fragment_reach: int = 3,
        fragment_share: float = 0.75,
        edge_reach: int = 2,
    ) -> None:
        self.clusters = clusters
        self.fragment_reach = fragment_reach
        self.fragment_share = fragment_share
        self.edge_reach = edge_reach
        self.max_area = max_area
        self.background_filter = background_filter
        self.min_contrast = min_contrast
        self.frame_perimeter = frame_perimeter
        self.frame_colour_share = frame_colour_share
        self.frame_width = frame_width

    def masks(self, pixels: np.ndarray) -> list[MaskProposal]:
        found, around = self._regions(pixels, judge=self.background_filter, background=False)
        kept = [proposal for proposal, _ in found]
        if around is not None and self.fragment_reach:
            kept = absorb_fragments(kept, around.lab, self.fragment_reach, self.fragment_share, self.min_contrast)
        return kept

    def regions(
        self, pixels: np.ndarray, judge: bool = True, background: bool = True
    ) -> list[tuple[MaskProposal, str | None]]:
        """Every region, with the reason it counts as background when `judge` (None: it does not);
        `background=False` leaves the background regions out (and makes no full-size mask for them).
        No fragment is absorbed here: these are the regions as k-means cut them."""
        return self._regions(pixels, judge, background)[0]

    def _regions(
        self, pixels: np.ndarray, judge: bool, background: bool
    ) -> tuple[list[tuple[MaskProposal, str | None]], _Surroundings | None]:
        """`regions`, and what the background tests measured (None when not `judge`)."""
        import cv2

        height, width = pixels.shape[:2]
        smooth = cv2.medianBlur(np.ascontiguousarray(pixels), 5)
        lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
        sample = lab[:: max(1, lab.shape[0] // 20000)]
        cv2.setRNGSeed(0)  # the same image always gives the same regions
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
        k = min(self.clusters, len(sample))
        _, _, centres = cv2.kmeans(sample, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
        labels = np.argmin(((lab[:, None, :] - centres[None, :, :]) ** 2).sum(-1), axis=1).reshape(height, width)
        raw = cv2.cvtColor(pixels.astype(np.float32) / 255, cv2.COLOR_RGB2LAB) if judge else None
        around = _Surroundings(raw, smooth, self.frame_width) if raw is not None else None
        pad = around.ring + 1 if around else 0  # the tests look this far past a region's box

        regions: list[tuple[MaskProposal, str | None]] = []
        for cluster in range(k):
            count, components, stats, _ = cv2.connectedComponentsWithStats(
                (labels == cluster).astype(np.uint8), connectivity=4
            )
            for j in range(1, count):
                area = stats[j, cv2.CC_STAT_AREA]
                if area < 16 or area > self.max_area * height * width:
                    continue
                # work in the region's box (padded for the tests): most regions are small
                x, y, w, h = (int(v) for v in stats[j, :4])
                x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(width, x + w + pad), min(height, y + h + pad)
                crop = components[y0:y1, x0:x1] == j
                spread = float(smooth[y0:y1, x0:x1][crop].std(axis=0).mean())
                reason = self._background_reason(crop, (x0, y0), around) if around else None
                if reason and not background:
                    continue
                mask = np.zeros((height, width), bool)
                mask[y0:y1, x0:x1] = crop
                if raw is not None and not reason and self.edge_reach and area >= 0.002 * height * width:
                    mask = regrow_edge(mask, raw, self.edge_reach)
                regions.append((MaskProposal(mask, 1.0 / (1.0 + spread / 8.0), float(area / (w * h))), reason))
        return regions, around

    def _background_reason(self, region: np.ndarray, offset: tuple[int, int], around: _Surroundings) -> str | None:
        """Why a region (a crop of the image at `offset`, padded past its box) is background, or None."""
        import cv2

        x0, y0 = offset
        window = (slice(y0, y0 + region.shape[0]), slice(x0, x0 + region.shape[1]))
        region8 = region.astype(np.uint8)
        # the outline: region pixels with a 4-neighbour outside the region or outside the image
        inner = cv2.erode(region8, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        outline = int(region.sum() - inner.sum())
        contact = int((region & around.edge[window]).sum())
        if contact / outline >= self.frame_perimeter and _spans(region, offset, around.lab.shape[:2]):
            return "spans the frame"

        lab, texture = around.lab[window], around.texture[window]
        grain = float(np.median(texture[region]))
        contrast, ring = around.edge_contrast(region, inner, window)
        if contrast < self.min_contrast and not _differ(grain, float(np.median(texture[ring]))):
            return "low contrast"

        # the ground's colour: how much of the frame, outside this region, has this region's colour and texture
        colour = np.median(lab[region], axis=0)
        fy, fx = around.frame_yx
        inside = (fy >= y0) & (fy < y0 + region.shape[0]) & (fx >= x0) & (fx < x0 + region.shape[1])
        own = np.zeros(len(fy), bool)
        own[inside] = region[fy[inside] - y0, fx[inside] - x0]
        alike = ~own & (np.linalg.norm(around.frame_lab - colour, axis=1) < self.min_contrast)
        if alike.sum() >= self.frame_colour_share * len(fy) and not _differ(
            grain, float(np.median(around.frame_texture[alike]))
        ):
            return "background colour"
        return None


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # 4-neighbours, as the regions are connected


class _Surroundings:
    """What the background tests compare a region with, computed once per image: colours in Lab (ΔE units),
    each pixel's fine texture, the image's edge pixels, and a sample of the frame band around the image."""

    def __init__(self, raw: np.ndarray, smooth: np.ndarray, frame_width: float) -> None:
        """`raw`: the image in Lab (float, ΔE units); `smooth`: the median-filtered image (RGB, uint8)."""
        import cv2

        height, width = raw.shape[:2]
        side = max(height, width)
        self.lab = cv2.cvtColor(smooth.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
        # texture: how far each pixel is from its smoothed neighbourhood (grain, noise, a fine pattern)
        self.texture = np.linalg.norm(raw - self.lab, axis=2)
        self.ring = max(2, round(0.02 * side))  # how far around a region its surroundings reach
        self.box = (2 * self.ring + 1, 2 * self.ring + 1)
        # per pixel, the sum of the colours and the count of image pixels in the box around it (past the
        # image there is nothing to count), so a region's surroundings are these less the region's own
        self.lab_sum = cv2.boxFilter(self.lab, -1, self.box, normalize=False, borderType=cv2.BORDER_CONSTANT)
        ones = np.ones((height, width), np.float32)
        self.count = cv2.boxFilter(ones, -1, self.box, normalize=False, borderType=cv2.BORDER_CONSTANT)
        self.edge = np.zeros((height, width), bool)
        self.edge[[0, -1], :] = self.edge[:, [0, -1]] = True
        band = min(max(1, round(frame_width * side)), max(1, min(height, width) // 2))
        frame = np.ones((height, width), bool)
        frame[band : height - band, band : width - band] = False
        # the frame's statistics need no more than a few thousand of its pixels: an even sample of them
        ys, xs = np.nonzero(frame)
        step = max(1, len(ys) // 8192)
        self.frame_yx = ys[::step], xs[::step]
        self.frame_lab = self.lab[self.frame_yx]
        self.frame_texture = self.texture[self.frame_yx]

    def edge_contrast(
        self, region: np.ndarray, inner: np.ndarray, window: tuple[slice, slice]
    ) -> tuple[float, np.ndarray]:
        """The colour step across a region's outline (ΔE), and its ring (the pixels outside it within `ring`).

        At each outline pixel, the mean colour of the region within `ring` against the mean colour outside it
        within `ring`; the median over the outline. Compared place by place, a band of a smooth gradient has
        no step (on both sides of any point of its edge the colour is nearly its own) although its two sides
        differ; the median ignores the stretch of outline where another object happens to be near."""
        import cv2

        weight = region.astype(np.float32)
        border = cv2.BORDER_CONSTANT  # the crop is padded past the box: nothing of the region lies beyond it
        n_in = cv2.boxFilter(weight, -1, self.box, normalize=False, borderType=border)
        sum_in = cv2.boxFilter(self.lab[window] * weight[..., None], -1, self.box, normalize=False, borderType=border)
        n_out = self.count[window] - n_in
        ring = (n_in > 0) & ~region
        outline = region & ~inner & (n_out > 0.5)
        if not outline.any():
            return float("inf"), ring  # nothing outside to compare with: not low contrast
        mean_in = sum_in[outline] / n_in[outline, None]
        mean_out = (self.lab_sum[window][outline] - sum_in[outline]) / n_out[outline, None]
        return float(np.median(np.linalg.norm(mean_in - mean_out, axis=1))), ring


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _holes(mask: np.ndarray) -> np.ndarray:
    """The pixels a region encloses without covering them (a ring's hole, the fill inside an outline)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool) & ~mask


def _box(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """A region's bounding box, `pad` pixels wider on each side (clipped to the image)."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return (
        slice(max(0, ys[0] - pad), min(mask.shape[0], ys[-1] + pad + 1)),
        slice(max(0, xs[0] - pad), min(mask.shape[1], xs[-1] + pad + 1)),
    )


def _near_share(part: np.ndarray, other: np.ndarray, reach: int) -> float:
    """The share of `part`'s pixels within `reach` pixels of `other` (both full-size masks)."""
    import cv2

    window = _box(part, reach + 1)
    if not other[window].any():  # most regions are nowhere near each other: no dilation needed
        return 0.0
    near = cv2.dilate(other[window].astype(np.uint8), _disk(reach)).astype(bool)
    return float((part[window] & near).sum() / part.sum())


def _seen_through(inner: np.ndarray, outer: np.ndarray, lab: np.ndarray, reach: int, contrast: float) -> bool:
    """Is `inner`, lying in `outer`'s hole, the ground seen through it: of the colour just around both?"""
    import cv2

    if (inner & _holes(outer)).sum() < 0.5 * inner.sum():
        return False
    both = (inner | outer).astype(np.uint8)
    around = cv2.dilate(both, _disk(2 * reach + 3)).astype(bool) & ~cv2.dilate(both, _disk(reach)).astype(bool)
    if not around.any():
        return False
    return bool(np.linalg.norm(np.median(lab[inner], axis=0) - np.median(lab[around], axis=0)) < contrast)


def absorb_fragments(
    proposals: list[MaskProposal], lab: np.ndarray, reach: int, share: float, contrast: float
) -> list[MaskProposal]:
    """The regions with each fragment merged into the region it lies along.

    A region is a fragment of another when at least `share` of its pixels lie within `reach` pixels of it:
    a thin outline along its fill, a point cut off its star. A compact object beside another has only a
    thin strip that near, so both stay. Smallest first, so a fragment's fragment joins the same object.
    A region in another's hole with the colour around both (`contrast` ΔE in `lab`) is ground seen through a
    ring, and is never merged with it. The merged region keeps its colour score, with the compactness of
    its new shape."""
    proposals = list(proposals)
    masks = [p.mask for p in proposals]
    alive = [True] * len(masks)
    for a in sorted(range(len(masks)), key=lambda i: int(masks[i].sum())):
        best, into = share, None
        for b in range(len(masks)):
            if b == a or not alive[b]:
                continue
            near = _near_share(masks[a], masks[b], reach)
            if near >= best:
                best, into = near, b
        if into is None:
            continue
        part, body = masks[a], masks[into]
        if _seen_through(part, body, lab, reach, contrast) or _seen_through(body, part, lab, reach, contrast):
            continue
        masks[into], alive[a] = body | part, False
        proposals[into] = _merged(proposals[into], masks[into])
    return [p for p, keep in zip(proposals, alive) if keep]


def _merged(proposal: MaskProposal, mask: np.ndarray) -> MaskProposal:
    """A region grown to `mask`: its colour score, and the compactness (area over box) of the new shape."""
    rows, cols = _box(mask, 0)
    box_area = (rows.stop - rows.start) * (cols.stop - cols.start)
    return MaskProposal(mask, proposal.predicted_iou, float(mask.sum() / box_area))


def regrow_edge(mask: np.ndarray, lab: np.ndarray, reach: int) -> np.ndarray:
    """The region with the pixels within `reach` of it whose colour (`lab`: the unsmoothed image in Lab) is
    nearer the region's median colour than the median colour of a band just beyond."""
    import cv2

    window = _box(mask, 2 * reach + 6)
    region = mask[window]
    colours = lab[window]
    region8 = region.astype(np.uint8)
    band = cv2.dilate(region8, _disk(reach)).astype(bool) & ~region
    near = cv2.dilate(region8, _disk(reach + 1)).astype(bool)
    beyond = cv2.dilate(region8, _disk(2 * reach + 3)).astype(bool) & ~near
    if not band.any() or not beyond.any():
        return mask
    inside = np.median(colours[region], axis=0)
    outside = np.median(colours[beyond], axis=0)
    band &= np.linalg.norm(colours - inside, axis=2) < np.linalg.norm(colours - outside, axis=2)
    out = mask.copy()
    out[window] |= band
    return out


def _spans(region: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> bool:
    """Does a region (a crop at `offset`) reach both the left and right sides of the image, or its top and bottom?"""
    height, width = shape
    x0, y0 = offset
    x1, y1 = x0 + region.shape[1], y0 + region.shape[0]
    across = x0 == 0 and x1 == width and region[:, 0].any() and region[:, -1].any()
    down = y0 == 0 and y1 == height and region[0].any() and region[-1].any()
    return bool(across or down)


def _differ(grain: float, other: float) -> bool:
    """Do two texture levels (median ΔE from the smoothed image) differ visibly: twice as strong and 5 ΔE apart."""
    low, high = sorted((grain, other))
    return high - low >= 5.0 and high >= 2 * low


class OracleSegmenter:
    """Ground-truth masks looked up by the image's pixels: measures ranking apart from segmentation."""

    name = "oracle"

    def __init__(self, masks_by_image: dict[str, list[np.ndarray]]) -> None:
        self.masks_by_image = masks_by_image

    @staticmethod
    def key(pixels: np.ndarray) -> str:
        import hashlib

        return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()

    def masks(self, pixels: np.ndarray) -> list[MaskProposal]:
        return [MaskProposal(m) for m in self.masks_by_image.get(self.key(pixels), [])]


def _small(mask: np.ndarray, side: int = 128) -> np.ndarray:
    """A strided view of a mask, for cheap approximate IoU between many masks."""
    step = max(1, max(mask.shape) // side)
    return mask[::step, ::step]


def postprocess(
    proposals: list[MaskProposal], min_area: float, dedup_iou: float, max_segments: int, mask_max_side: int = 256
) -> list[Segment]:
    """Filter and rank raw masks into at most `max_segments` Segments, best first, each mask stored at most
    `mask_max_side` pixels on a side."""
    if not proposals:
        return []
    proposals = [
        MaskProposal(shrink_mask(p.mask, mask_max_side), p.predicted_iou, p.stability_score) for p in proposals
    ]
    total = proposals[0].mask.size
    scored = [c for c in proposals if c.mask.sum() / total >= min_area]
    scored.sort(key=lambda c: c.predicted_iou * c.stability_score, reverse=True)

    kept: list[MaskProposal] = []
    kept_small: list[np.ndarray] = []
    for proposal in scored:
        if len(kept) >= max_segments:
            break
        small = _small(proposal.mask)
        duplicate = False
        for other in kept_small:
            union = np.logical_or(small, other).sum()
            if union and np.logical_and(small, other).sum() / union > dedup_iou:
                duplicate = True
                break
        if not duplicate:
            kept.append(proposal)
            kept_small.append(small)

    return [
        Segment(
            bbox=mask_box(c.mask),
            centroid=mask_centroid(c.mask),
            area=float(c.mask.sum() / total),
            mask_rle=rle_encode(c.mask),
            mask_shape=(int(c.mask.shape[0]), int(c.mask.shape[1])),
            predicted_iou=c.predicted_iou,
            stability_score=c.stability_score,
            index=i,
        )
        for i, c in enumerate(kept)
    ]


def make_segmenter(settings: Settings) -> Segmenter | None:
    """The segmenter the settings name, or None for whole-image-only indexing."""
    if settings.segmenter == "none":
        return None
    if settings.segmenter == "sam":
        from irs.models import load_sam

        sam = load_sam(settings.sam_model_type, settings.sam_checkpoint, settings.cache_dir, settings.device)
        if settings.sam_generator == "stock":
            return SamSegmenter(sam, settings)
        if settings.sam_generator == "batched":
            return BatchedSamSegmenter(sam, settings)
        raise ValueError(f"setting 'sam_generator': {settings.sam_generator!r} is not one of batched, stock")
    if settings.segmenter == "components":
        return ComponentsSegmenter()
    raise ValueError(
        f"setting 'segmenter': unknown segmenter {settings.segmenter!r}; one of sam, components, none"
        + (" (oracle is for the benchmark, which passes its own)" if settings.segmenter == "oracle" else "")
    )


def segment_image(segmenter: Segmenter, pixels: np.ndarray, settings: Settings) -> list[Segment]:
    """Run a segmenter and its post-processing on one image."""
    return segment_images(segmenter, [pixels], settings)[0]


def segment_images(segmenter: Segmenter, images: list[np.ndarray], settings: Settings) -> list[list[Segment]]:
    """Segment several images, in one model batch when the segmenter can (`masks_batch`)."""
    if len(images) > 1 and hasattr(segmenter, "masks_batch"):
        raw = segmenter.masks_batch(images)
    else:
        raw = [segmenter.masks(pixels) for pixels in images]
    return [
        postprocess(
            masks, settings.min_segment_area, settings.segment_dedup_iou, settings.max_segments, settings.mask_max_side
        )
        for masks in raw
    ]
