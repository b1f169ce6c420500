"""Model loading: open_clip models by name + pretrained tag or local file, SAM by checkpoint.

Real weights load the way users expect (open_clip's hub cache; SAM checkpoints downloaded once,
SHA-256 checked). The `tiny` SAM and the `irs-*` CLIP configs are built in code from
irs/model_configs, with seeded random weights, so every process builds the same model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from irs.settings import SettingsError

CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # "irs:NAME" in clip_pretrained means a file here

# Published Segment Anything checkpoints and their SHA-256.
SAM_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "vit_h": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    # MobileSAM: a TinyViT encoder with SAM's prompt encoder and mask decoder (package mobilesam-mirror)
    "vit_t": (
        "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
    ),
}


class WeightsError(RuntimeError):
    """Model weights could not be found or fetched; the message says which, where, and how to fix."""


def pick_device(name: str) -> torch.device:
    """`auto` prefers cuda, then mps, then cpu. A device torch cannot use is a SettingsError, not a traceback later."""
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps:
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SettingsError(f"setting 'device': {name!r} is not one of auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        problem = "torch sees no CUDA GPU (torch.cuda.is_available() is False); use auto or cpu"
    elif device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        problem = (
            f"torch sees {count} CUDA GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1}); use auto or cuda"
        )
    elif device.type == "mps" and not mps:
        problem = "torch sees no MPS device (torch.backends.mps.is_available() is False); use auto or cpu"
    else:
        return device
    raise SettingsError(f"setting 'device': {name!r} asked for, but {problem}")


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on a CUDA device, nothing elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class ClipModel:
    """An open_clip model with its inference transform and tokenizer."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Any
    name: str
    pretrained: str
    device: torch.device

    @property
    def dim(self) -> int:
        return (
            int(self.model.text_projection.shape[1])
            if hasattr(self.model, "text_projection") and self.model.text_projection is not None
            else int(self.model.visual.output_dim)
        )


@contextmanager
def _quiet_if(condition: bool) -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning when random weights are what we asked for."""
    if condition:
        logging.disable(logging.WARNING)
    try:
        yield
    finally:
        if condition:
            logging.disable(logging.NOTSET)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def load_clip(name: str, pretrained: str, device: str = "auto", seed: int = 0) -> ClipModel:
    """Build an open_clip model. `pretrained`: an open_clip tag, a local file, or "" (random)."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    if name not in open_clip.list_models():
        raise WeightsError(f"unknown CLIP model {name!r}; see open_clip.list_models()")
    torch_device = pick_device(device)
    if pretrained.startswith("irs:"):
        pretrained = str(WEIGHTS_DIR / pretrained[4:])
    if pretrained and _looks_like_path(pretrained) and not Path(pretrained).expanduser().is_file():
        raise WeightsError(
            f"CLIP weights file {pretrained!r} not found. Set clip_pretrained (IRS_CLIP_PRETRAINED) "
            "to an existing checkpoint, or to an open_clip pretrained tag."
        )
    with torch.random.fork_rng(devices=[]), _quiet_if(not pretrained):
        torch.manual_seed(seed)  # random-weight models must be identical in every process
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=str(Path(pretrained).expanduser()) if _looks_like_path(pretrained) else (pretrained or None),
                device=torch_device,
            )
        except Exception as err:  # open_clip and huggingface_hub raise many kinds here
            if not pretrained:
                raise
            raise WeightsError(_clip_weights_message(name, pretrained, err)) from err
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return ClipModel(model, preprocess, tokenizer, name, pretrained, torch_device)


def _clip_weights_message(name: str, pretrained: str, err: Exception) -> str:
    import open_clip

    if _looks_like_path(pretrained):
        return f"CLIP weights file {pretrained!r} could not be loaded into {name}: {err}"
    cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    source = cfg.get("hf_hub") or cfg.get("url") or "(no published source for this tag)"
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as where
    except ImportError:
        where = "~/.cache/huggingface/hub"
    return (
        f"CLIP weights {name} / {pretrained} are not in the hub cache ({where}) and could not be "
        f"downloaded ({type(err).__name__}: {str(err)[:200]}). Provide them by running once with "
        f"internet access, or download them from {source} and set clip_pretrained "
        "(IRS_CLIP_PRETRAINED) to the local file."
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, progress: bool = True) -> Path:
    """Fetch `url` to `dest` with a progress bar; keep it only if its SHA-256 matches."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial_path = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial_path, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as err:
        partial_path.unlink(missing_ok=True)
        raise WeightsError(
            f"SAM checkpoint {dest.name} is not at {dest} and could not be downloaded from {url} "
            f"({err}). Download it with a browser and put it at {dest}, or set sam_checkpoint "
            "(IRS_SAM_CHECKPOINT) to a local copy."
        ) from None
    actual = sha256_file(partial_path)
    if actual != sha256:
        partial_path.unlink(missing_ok=True)
        raise WeightsError(f"{url}: SHA-256 {actual} does not match the published {sha256}; not kept")
    partial_path.replace(dest)
    return dest


def sam_checkpoint(model_type: str, checkpoint: str, cache_dir: str, progress: bool = True) -> Path:
    """The local checkpoint for a SAM model type: the given path, or the published one (downloaded once)."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"SAM checkpoint {path} not found (setting sam_checkpoint)")
        return path
    if model_type not in SAM_CHECKPOINTS:
        raise WeightsError(f"no published checkpoint for SAM model type {model_type!r}; set sam_checkpoint")
    url, sha = SAM_CHECKPOINTS[model_type]
    dest = Path(cache_dir).expanduser() / Path(url).name
    if dest.is_file():
        return dest
    return download(url, dest, sha, progress)


def build_tiny_sam(seed: int = 0) -> torch.nn.Module:
    """A small random-weight Sam with the real architecture's modules, for tests."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    image_size, patch, dim = 256, 16, 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=image_size,
                patch_size=patch,
                embed_dim=64,
                depth=2,
                num_heads=2,
                mlp_ratio=2,
                out_chans=dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=4,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(image_size // patch, image_size // patch),
                input_image_size=(image_size, image_size),
                mask_in_chans=8,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                transformer_dim=dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
        )
    return sam.eval()


def build_sam_architecture(model_type: str) -> torch.nn.Module:
    """The architecture of a SAM model type with random weights (vit_t comes from MobileSAM)."""
    if model_type == "vit_t":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MobileSAM imports timm's deprecated paths
            from mobile_sam import sam_model_registry as mobile_registry
        return mobile_registry["vit_t"](checkpoint=None)
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        raise WeightsError(f"unknown SAM model type {model_type!r}; one of vit_h, vit_l, vit_b, vit_t, tiny")
    return sam_model_registry[model_type](checkpoint=None)


def load_sam(model_type: str, checkpoint: str, cache_dir: str, device: str = "auto") -> torch.nn.Module:
    """A Segment Anything model on its device, weights loaded with weights_only=True."""
    if model_type == "tiny":
        return build_tiny_sam().to(pick_device(device))
    path = sam_checkpoint(model_type, checkpoint, cache_dir)
    sam = build_sam_architecture(model_type)
    state = torch.load(path, map_location="cpu", weights_only=True)
    sam.load_state_dict(state)
    return sam.to(pick_device(device)).eval()
