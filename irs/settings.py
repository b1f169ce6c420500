"""One settings object: defaults, then a profile, then a TOML file, then IRS_* environment variables.

Every field can be set in `irs.toml` (in the database folder, or the file named by IRS_CONFIG) and
by the environment variable IRS_<FIELD IN CAPITALS>. Explicit overrides (CLI flags) win over all.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import platformdirs

# Settings that change what is stored: a database remembers them in its manifest and refuses others.
INDEX_FIELDS = (
    "clip_model",
    "clip_pretrained",
    "segmenter",
    "sam_model_type",
    "sam_checkpoint",
    "sam_generator",
    "points_per_side",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "min_mask_region_area",
    "min_segment_area",
    "segment_dedup_iou",
    "max_segments",
    "mask_max_side",
    "segment_background",
    "crop_padding",
    "work_max_side",
)


@dataclass(frozen=True)
class Settings:
    """Everything irs can be told. See README "Configuration" for each field."""

    db: str = str(Path(platformdirs.user_data_dir("irs")) / "db")
    profile: str = "default"  # default | test | demo
    cache_dir: str = platformdirs.user_cache_dir("irs")  # downloaded SAM checkpoints

    # discover and load
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
    max_pixels: int = 100_000_000  # refuse larger images (decompression bombs)
    work_max_side: int = 1024  # images are decoded down to this longest side

    # embed (open_clip)
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"  # an open_clip tag, a local file, or "" for random
    device: str = "auto"  # auto | cpu | cuda | mps
    batch_size: int = 64
    load_workers: int = 2  # threads reading and decoding ahead of the model (0: none)
    segment_background: str = "grey"  # grey | blur | keep: pixels outside a segment's mask
    crop_padding: float = 0.1  # context around a segment's box, as a fraction of the box

    # segment (Segment Anything)
    segmenter: str = "sam"  # sam | none
    sam_model_type: str = "vit_b"  # vit_h | vit_l | vit_b | vit_t (MobileSAM) | tiny (random, tests only)
    sam_checkpoint: str = ""  # local path; "" downloads the published checkpoint
    sam_generator: str = "batched"  # batched (fast, irs's) | stock (segment_anything's SamAutomaticMaskGenerator)
    sam_batch: int = 1  # images per SAM encoder batch (raise on a GPU)
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0  # pixels; > 0 removes holes and islands with OpenCV
    min_segment_area: float = 0.005  # drop segments smaller than this fraction of the image
    segment_dedup_iou: float = 0.85  # drop a segment whose mask IoU with a better one is above
    max_segments: int = 32  # keep the best N per image
    mask_max_side: int = 256  # masks are stored at most this big (SAM's own mask logits are 256x256)

    # search
    weight_image: float = 0.5  # fused = weight_image * image_sim + weight_segment * segment_sim
    weight_segment: float = 0.5
    weight_position: float = 0.5  # how much a poor position fit costs a phrase (see irs.search)
    weight_relation: float = 0.5  # how much a poor relation fit costs a pair of phrases
    weight_negative: float = 0.5  # how much a "-term" costs
    image_pool: int = 100  # candidates from the image collection
    segment_pool: int = 400  # candidates from the segment collection

    # app
    allowed_roots: tuple[str, ...] = ()  # when set, the app indexes only folders under these

    # store
    chroma_host: str = ""  # set to use a Chroma server instead of the local database
    chroma_port: int = 8000
    chroma_retry_seconds: float = 30.0  # how long an unreachable Chroma server is retried before giving up
    decode_timeout: float = 60.0  # seconds one file's read + decode may take before it is abandoned
    lock_timeout: float = 0.0  # seconds a second indexer waits for the database's writer lock

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def index_fingerprint(self) -> dict[str, Any]:
        """The settings a database is bound to (its manifest)."""
        return {name: getattr(self, name) for name in INDEX_FIELDS}


# A profile is a named set of defaults. "test": tiny random models that run offline in seconds.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "test": {
        "clip_model": "irs-tiny",
        "clip_pretrained": "",
        "device": "cpu",
        "sam_model_type": "tiny",
        "sam_generator": "stock",
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 1.0,
        "min_segment_area": 0.002,
        "max_segments": 8,
        "work_max_side": 256,
    },
    # "demo": works offline: the small CLIP trained in this repo on synthetic shapes, weight-free segments
    "demo": {
        "clip_model": "irs-small",
        "clip_pretrained": "irs:irs-small-synthetic.pt",
        "segmenter": "components",
        "min_segment_area": 0.002,
        "work_max_side": 512,
        # chosen on a development gallery (seed 77; training used 7, the benchmark 2026): this small
        # model's whole-image vectors are weak, its segment vectors strong
        "weight_image": 0.2,
        "weight_segment": 0.8,
    },
}


class SettingsError(ValueError):
    """A setting has a value irs cannot use; the message names it."""


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    """Turn a file or environment value into the field's type, naming the field on failure."""
    try:
        if kind in ("tuple[str, ...]",):
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            return tuple(str(i).strip().lower() for i in items if str(i).strip())
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as err:
        raise SettingsError(f"setting {name!r}: cannot read {raw!r} as {kind} ({err})") from None


def _apply(base: dict[str, Any], values: Mapping[str, Any], source: str) -> None:
    kinds = {f.name: f.type for f in fields(Settings)}
    for name, raw in values.items():
        if name not in kinds:
            raise SettingsError(f"{source}: unknown setting {name!r}")
        base[name] = _coerce(name, raw, kinds[name])


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    names = {f.name for f in fields(Settings)}
    return {
        key[4:].lower(): value for key, value in environ.items() if key.startswith("IRS_") and key[4:].lower() in names
    }


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings: defaults < profile < irs.toml < IRS_* environment < overrides."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_values = _from_env(environ)

    db = overrides.get("db") or env_values.get("db") or Settings.db
    config_path = Path(environ.get("IRS_CONFIG") or Path(db).expanduser() / "irs.toml")
    file_values: dict[str, Any] = {}
    if config_path.is_file():
        try:
            file_values = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise SettingsError(f"{config_path}: not a readable TOML file ({err})") from None

    profile = overrides.get("profile") or env_values.get("profile") or file_values.get("profile")
    profile = profile or "default"
    if profile not in PROFILES:
        raise SettingsError(f"setting 'profile': unknown profile {profile!r}; one of {list(PROFILES)}")

    values: dict[str, Any] = {}
    _apply(values, PROFILES[profile], f"profile {profile}")
    _apply(values, file_values, str(config_path))
    _apply(values, env_values, "environment")
    _apply(values, overrides, "arguments")
    values["profile"] = profile
    values["db"] = str(Path(values.get("db", Settings.db)).expanduser())
    return Settings(**values)
