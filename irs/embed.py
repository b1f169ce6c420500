"""Embed: whole images, segment crops and query texts into one normalised CLIP space."""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import nullcontext

import numpy as np
import torch
from PIL import Image, ImageFilter

from irs.geometry import box_pixels, fit_mask, pad_box
from irs.models import ClipModel
from irs.records import Segment

log = logging.getLogger(__name__)


class Embedder:
    """Batched open_clip inference. Vectors come back L2-normalised, float32."""

    def __init__(self, clip: ClipModel, batch_size: int = 64, background: str = "grey", padding: float = 0.1) -> None:
        if background not in ("grey", "blur", "keep"):
            raise ValueError(f"setting 'segment_background': {background!r} is not one of grey, blur, keep")
        self.clip = clip
        self.batch_size = batch_size
        self.background = background
        self.padding = padding
        mean = getattr(clip.model.visual, "image_mean", None)
        # the model's own mean colour normalises to zero: masked-out pixels then carry no signal at all
        self.grey = tuple(int(round(m * 255)) for m in mean) if mean else CLIP_GREY
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def dim(self) -> int:
        return self.clip.dim

    def _autocast(self) -> object:
        device = self.clip.device
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def images(self, images: list[Image.Image]) -> np.ndarray:
        """Embed PIL images through the model's own preprocess; one row per image."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.clip.preprocess(im) for im in images[start : start + self.batch_size]])
            out.append(self.encode_pixels(batch))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_pixels(self, batch: torch.Tensor) -> np.ndarray:
        """Embed an already preprocessed NCHW batch."""
        with torch.inference_mode(), self._autocast():
            features = self.clip.model.encode_image(batch.to(self.clip.device, non_blocking=True))
        return _normalise(features)

    def texts(self, texts: list[str]) -> np.ndarray:
        """Embed query texts; over-long ones are truncated to the model's context, with a warning."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            for text in missing:
                self._warn_if_truncated(text)
            tokens = self.clip.tokenizer(missing).to(self.clip.device)
            with torch.inference_mode(), self._autocast():
                vectors = _normalise(self.clip.model.encode_text(tokens))
            for text, vector in zip(missing, vectors):
                self._text_cache[text] = vector
                if len(self._text_cache) > 1024:
                    self._text_cache.popitem(last=False)
        return np.stack([self._text_cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def _warn_if_truncated(self, text: str) -> None:
        tok = self.clip.tokenizer
        limit = getattr(tok, "context_length", 77)
        if hasattr(tok, "encode"):
            count = len(tok.encode(text)) + 2  # start and end tokens
        else:
            count = limit + 1 if int(tok([text])[0, -1]) != 0 else 0
        if count > limit:
            log.warning("query is %d tokens, over the model's %d: the end is cut off: %.60s...", count, limit, text)

    def segment_crops(self, pixels: np.ndarray, segments: list[Segment]) -> list[Image.Image]:
        """Square crops around each segment, outside-mask pixels set to the background setting."""
        return [segment_crop(pixels, seg, self.background, self.padding, self.grey) for seg in segments]


# CLIP's mean colour (OpenAI and most open_clip models): it normalises to zero.
CLIP_GREY = (123, 117, 104)


def segment_crop(
    pixels: np.ndarray,
    segment: Segment,
    background: str = "grey",
    padding: float = 0.1,
    grey: tuple[int, ...] = CLIP_GREY,
) -> Image.Image:
    """The crop a segment is embedded from: its padded box, outside-mask pixels grey / blurred / kept,
    padded to a square so CLIP's centre crop cuts nothing off."""
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = box_pixels(pad_box(segment.bbox, padding), width, height)
    crop = pixels[y0:y1, x0:x1].copy()
    if background != "keep":
        inside = fit_mask(segment.mask(), height, width)[y0:y1, x0:x1]  # stored masks may be smaller
        if background == "grey":
            fill = np.array(grey, np.uint8)
        else:
            blur = ImageFilter.GaussianBlur(radius=max(crop.shape) / 16)
            fill = np.asarray(Image.fromarray(crop).filter(blur))[~inside]
        crop[~inside] = fill
    return _square(Image.fromarray(crop), grey)


def _square(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """Pad to a square so CLIP's centre crop cuts nothing off."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - image.size[0]) // 2, (side - image.size[1]) // 2))
    return canvas


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32)
