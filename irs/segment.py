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
            keep = (iou > s.pred_iou_thresh) & (stability >= s.stability_score_thresh)
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
    benchmark), a rough cut for photos, and it runs in milliseconds on a CPU. A region's score is its
    colour uniformity (predicted_iou) and how compact it is (stability_score), so flat, solid regions
    rank before background patches.
    """

    name = "components"

    def __init__(self, clusters: int = 8, max_area: float = 0.5) -> None:
        self.clusters = clusters
        self.max_area = max_area

    def masks(self, pixels: np.ndarray) -> list[MaskProposal]:
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

        proposals = []
        for cluster in range(k):
            count, components, stats, _ = cv2.connectedComponentsWithStats(
                (labels == cluster).astype(np.uint8), connectivity=4
            )
            for j in range(1, count):
                area = stats[j, cv2.CC_STAT_AREA]
                if area < 16 or area > self.max_area * height * width:
                    continue
                mask = components == j
                spread = float(smooth[mask].std(axis=0).mean())
                box_area = stats[j, cv2.CC_STAT_WIDTH] * stats[j, cv2.CC_STAT_HEIGHT]
                proposals.append(MaskProposal(mask, 1.0 / (1.0 + spread / 8.0), float(area / box_area)))
        return proposals


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
