"""Embed: whole images, segment crops and query texts into one normalised CLIP space."""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager

import numpy as np
import torch
from PIL import Image

from irs.geometry import fit_mask, pad_box
from irs.models import ClipModel, autocast
from irs.pipeline import chunks
from irs.records import Segment
from irs.text_tower import (
    can_quantize_text,
    can_truncate_text,
    encode_text_int8,
    encode_text_truncated,
    int8_text_tower,
    text_tower_copy,
)

log = logging.getLogger(__name__)


class Embedder:
    """Batched open_clip inference. Vectors come back L2-normalised, float32."""

    def __init__(
        self,
        clip: ClipModel,
        batch_size: int = 64,
        background: str = "grey",
        padding: float = 0.1,
        text_dtype: str = "float32",
    ) -> None:
        if text_dtype not in ("auto", "float32", "bfloat16", "int8"):
            raise ValueError(f"setting 'text_dtype': {text_dtype!r} is not one of auto, float32, bfloat16, int8")
        if background not in ("grey", "blur", "keep"):
            raise ValueError(f"setting 'segment_background': {background!r} is not one of grey, blur, keep")
        self.clip = clip
        self.batch_size = batch_size
        self.background = background
        self.padding = padding
        visual = clip.model.visual
        self.size = visual.image_size[0] if isinstance(visual.image_size, tuple) else int(visual.image_size)
        self.mean = tuple(getattr(visual, "image_mean", None) or OPENAI_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or OPENAI_STD)
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_lock = threading.Lock()  # searches from several threads share the cache
        self._truncates = can_truncate_text(clip.model)
        self._text_dtype = text_dtype
        # bf16 queries: a bf16 copy of the text tower alone (the image tower and the index are unchanged)
        bf16 = text_dtype == "bfloat16" and self._truncates
        self._text_tower = text_tower_copy(clip.model, torch.bfloat16) if bf16 else None
        self._threads = torch.get_num_threads()  # the count an int8 query restores (irs.text_tower.one_thread)

    @property
    def dim(self) -> int:
        return self.clip.dim

    def _autocast(self) -> AbstractContextManager:
        return autocast(self.clip.device)

    def images(self, images: list[Image.Image]) -> np.ndarray:
        """Embed PIL images through the model's own preprocess; one row per image."""
        out = []
        for chunk in chunks(images, self.batch_size):
            out.append(self.encode_pixels(torch.stack([self.clip.preprocess(im) for im in chunk])))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_pixels(self, batch: torch.Tensor) -> np.ndarray:
        """Embed an already preprocessed NCHW batch (in chunks of batch_size)."""
        out = []
        with torch.inference_mode(), self._autocast():
            for chunk in chunks(batch, self.batch_size):
                out.append(_normalise(self.clip.model.encode_image(chunk.to(self.clip.device, non_blocking=True))))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_groups(self, groups: list[torch.Tensor]) -> list[np.ndarray]:
        """Embed several images' crops (one preprocessed NCHW tensor per image) in one batch; one array of
        vectors per image, in order."""
        vectors = self.encode_pixels(torch.cat(groups))
        return np.split(vectors, np.cumsum([len(group) for group in groups])[:-1])

    def texts(self, texts: list[str]) -> np.ndarray:
        """Embed query texts; over-long ones are truncated to the model's context, with a warning."""
        with self._text_cache_lock:
            found = {t: self._text_cache[t] for t in dict.fromkeys(texts) if t in self._text_cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text in missing:
                self._warn_if_truncated(text)
            tokens = self.clip.tokenizer(missing).to(self.clip.device)
            with torch.inference_mode(), self._autocast():
                vectors = _normalise(self._encode_text(tokens))
            found.update(zip(missing, vectors))
            with self._text_cache_lock:
                for text, vector in zip(missing, vectors):
                    self._text_cache[text] = vector
                    if len(self._text_cache) > 1024:
                        self._text_cache.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def text_stream(self, texts: list[str]) -> Iterator[np.ndarray]:
        """The vectors of `texts` (as `texts` gives them), each as soon as it is encoded: one text at a time
        where the text tower encodes one at a time anyway (int8), else all in one batch, which is faster."""
        if self._int8_tower is None:
            yield from self.texts(texts)
            return
        for text in texts:
            yield self.texts([text])[0]

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """The text tower on the query's tokens only, where that gives the same vectors (see below); with
        text_dtype int8, through the int8 copy (irs.text_tower); with bfloat16, in bf16 (a query's tower is bound
        by reading its weights: half the bytes)."""
        if self._int8_tower is not None:
            return encode_text_int8(self._int8_tower, tokens, self._threads)
        if self._text_tower is not None:
            return encode_text_truncated(self._text_tower, tokens)
        if self._text_dtype == "bfloat16":  # a tower the copy cannot stand in for: bf16 arithmetic on the stock path
            with torch.autocast(self.clip.device.type, dtype=torch.bfloat16):
                return self.clip.model.encode_text(tokens)
        if self._truncates:
            return encode_text_truncated(self.clip.model, tokens)
        return self.clip.model.encode_text(tokens)

    @functools.cached_property
    def _int8_tower(self) -> torch.nn.Module | None:
        """Built on the first query, so indexing never pays for it (~0.5 s for ViT-B-32)."""
        dtype, on_cpu = self._text_dtype, self.clip.device.type == "cpu"
        if dtype == "int8" or (dtype == "auto" and on_cpu):
            return self._int8_text_tower(quiet=dtype == "auto")
        return None

    def _int8_text_tower(self, quiet: bool = False) -> torch.nn.Module | None:
        """An int8 copy of the text tower (irs.text_tower), once a probe query through it points where the
        float32 one does; else None, with a warning (`quiet`, for text_dtype auto: an info line), and queries
        run in float32."""
        warn = log.info if quiet else log.warning
        model = self.clip.model
        if self.clip.device.type != "cpu" or not self._truncates or not can_quantize_text(model):
            warn("text_dtype int8 needs an open_clip text tower on a CPU: queries run in float32 here")
            return None
        probe = self.clip.tokenizer(["a photo of a red car on the left of a small dog"])
        try:
            tower = int8_text_tower(model)
            with torch.inference_mode():
                exact = torch.nn.functional.normalize(encode_text_truncated(model, probe).float(), dim=-1)
                fast = torch.nn.functional.normalize(encode_text_int8(tower, probe, self._threads).float(), dim=-1)
        except (RuntimeError, NotImplementedError) as exc:  # no quantised kernels in this PyTorch build
            warn("text_dtype int8 is not available here (%s): queries run in float32", exc)
            return None
        cosine = float((exact * fast).sum())
        if not cosine >= INT8_PROBE_COSINE:
            warn(
                "text_dtype int8 moved a probe query to cosine %.4f (< %s): queries run in float32",
                cosine,
                INT8_PROBE_COSINE,
            )
            return None
        return tower

    def _warn_if_truncated(self, text: str) -> None:
        tok = self.clip.tokenizer
        limit = getattr(tok, "context_length", 77)
        if hasattr(tok, "encode"):
            count = len(tok.encode(text)) + 2  # start and end tokens
        else:
            count = limit + 1 if int(tok([text])[0, -1]) != 0 else 0
        if count > limit:
            log.warning("query is %d tokens, over the model's %d: the end is cut off: %.60s...", count, limit, text)

    def segment_pixels(self, pixels: np.ndarray, segments: list[Segment]) -> torch.Tensor:
        """Model-ready crops of an image's segments, cut on the model's device (see `segment_pixels`)."""
        return segment_pixels(
            pixels, segments, self.size, self.mean, self.std, self.background, self.padding, self.clip.device
        )

    def segments(self, pixels: np.ndarray, segments: list[Segment]) -> np.ndarray:
        """Embed an image's segments."""
        return self.encode_pixels(self.segment_pixels(pixels, segments))


# a tower that moves a query further than this from its float32 vector is not used (measured: 0.999 and more)
INT8_PROBE_COSINE = 0.99

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def segment_pixels(
    pixels: np.ndarray,
    segments: list[Segment],
    size: int,
    mean: tuple[float, ...] = OPENAI_MEAN,
    std: tuple[float, ...] = OPENAI_STD,
    background: str = "grey",
    padding: float = 0.1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The (K, 3, size, size) normalised crops segments are embedded from, all cut in one batch.

    Each crop is the segment's box, padded by `padding` of the box for context and widened to a square
    (nothing squashed, nothing cut off), resampled with roi_align (bilinear, 2x2 samples per output
    pixel). Pixels outside the segment's mask, and outside the image, become the
    model's mean colour ("grey": zero after normalisation, so they carry no signal), or are blurred
    ("blur"), or kept ("keep"). It runs where the model runs, so a GPU does this work too.
    """
    from torchvision.ops import roi_align

    if not segments:
        return torch.zeros((0, 3, size, size), device=device)
    height, width = pixels.shape[:2]
    image = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(device).permute(2, 0, 1)[None]
    image = image.float() / 255.0
    boxes = []
    for seg in segments:
        x0, y0, x1, y1 = pad_box(seg.bbox, padding)
        cx, cy = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
        half = max((x1 - x0) * width, (y1 - y0) * height, 1.0) / 2
        boxes.append([cx - half, cy - half, cx + half, cy + half])
    boxes_t = torch.tensor(boxes, dtype=torch.float32, device=device)
    on_image = torch.cat([torch.zeros((len(segments), 1), device=device), boxes_t], 1)
    crops = roi_align(image, on_image, size, 1.0, 2, aligned=True)
    inside_image = roi_align(torch.ones_like(image[:, :1]), on_image, size, 1.0, 2, aligned=True)

    mask_h, mask_w = segments[0].mask_shape
    masks = torch.stack([torch.as_tensor(fit_mask(s.mask(), mask_h, mask_w), device=device) for s in segments])
    own = torch.arange(len(segments), device=device, dtype=torch.float32)[:, None]
    on_mask = torch.cat([own, boxes_t], 1)
    keep = inside_image
    if background != "keep":
        keep = roi_align(masks[:, None].float(), on_mask, size, mask_h / height, 2, aligned=True).clamp(0, 1)
        keep = keep * inside_image
    grey = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    fill = grey
    if background == "blur":
        blurred = torch.nn.functional.avg_pool2d(crops, 9, stride=1, padding=4, count_include_pad=False)
        fill = blurred * inside_image + grey * (1 - inside_image)
    crops = crops * keep + fill * (1 - keep)
    return (crops - grey) / torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32)
