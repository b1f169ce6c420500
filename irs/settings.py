"""One settings object: defaults, then a profile, then a TOML file, then IRS_* environment variables.

Every field can be set in `irs.toml` (in the database folder, or the file named by IRS_CONFIG) and
by the environment variable IRS_<FIELD IN CAPITALS>. Explicit overrides (CLI flags) win over all.
Every value is checked whenever a Settings is made (`replace` too), so a bad one stops irs at once with a
message naming the setting, the value, what is allowed and, from `load_settings`, where the value came from.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import threading
import tomllib
from collections.abc import Callable, Mapping
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
# What the weight-free segmenter returns changed: revision 2 drops background regions, 3 regrows regions by the edge
# the median filter took and joins fragments to the object they lie along, 4 cuts colours into 12 clusters, not 8
# (irs/segment.py). Databases built by another revision (before 2 none is recorded) are refused rather than filled
# with segments of two kinds.
COMPONENTS_REVISION = 4


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
    decode_timeout: float = 60.0  # seconds one file's read and decode may take before it is abandoned and recorded

    # embed (open_clip)
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"  # an open_clip tag, a local file, or "" for random
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    batch_size: int = 64
    load_workers: int = 2  # threads reading and decoding ahead of the model (0: none)
    segment_background: str = "grey"  # grey | blur | keep: pixels outside a segment's mask
    crop_padding: float = 0.1  # context around a segment's box, as a fraction of the box

    # segment (Segment Anything)
    segmenter: str = "sam"  # sam | components (weight-free) | none | oracle (the benchmark's, passed in)
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
    weight_all: float = 0.0  # 0..1: how much the weakest phrase counts besides the mean (a soft AND; irs/search.py)
    # the query's text tower: float32, bfloat16 (a bf16 copy; fast on a CPU with AVX512-BF16 or AMX), int8 (an
    # int8 copy, CPU only: irs/text_tower.py) or auto (int8 on a CPU, else float32); query vectors move by < 1e-3 in
    # cosine; the index is the same whichever is chosen
    text_dtype: str = "auto"
    image_pool: int = 100  # candidates from the image collection (at least k: 0 means k)
    segment_pool: int = 400  # candidates from the segment collection (at least k)

    # app
    allowed_roots: tuple[str, ...] = ()  # when set, the app indexes only folders under these (kept as written)

    # store
    chroma_host: str = ""  # set to use a Chroma server instead of the local database
    chroma_port: int = 8000
    chroma_retry_seconds: float = 30.0  # how long an unreachable Chroma server is retried before giving up
    # how widely Chroma's HNSW graph is searched (Chroma's default 100): higher finds more of the true nearest
    # vectors, so more often the exact top k (bench/search_latency.py measures both), at some cost per query
    chroma_ef_search: int = 100
    lock_timeout: float = 0.0  # seconds a second indexer waits for the database's writer lock (0: do not wait)

    def __post_init__(self) -> None:
        # the instance is frozen: store the tidied values (an int weight as float, ".PNG" as ".png") past it
        for f in fields(self):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name)))

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (and checked)."""
        return dataclasses.replace(self, **changes)

    def index_fingerprint(self) -> dict[str, Any]:
        """The settings a database is bound to (its manifest)."""
        fingerprint: dict[str, Any] = {name: getattr(self, name) for name in INDEX_FIELDS}
        if self.segmenter == "components":
            fingerprint["components_revision"] = COMPONENTS_REVISION
        return fingerprint


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
        "text_dtype": "float32",  # answers compared with stored ones to the last bit (int8: tests/test_text_tower.py)
    },
    # "demo": works offline: the small CLIP trained in this repo on synthetic shapes, weight-free segments
    "demo": {
        "clip_model": "irs-small",
        "clip_pretrained": "irs:irs-small-synthetic.pt",
        "segmenter": "components",
        # the smallest synthetic shapes cover about 0.0012 of the image: at 0.002, 24 of a development gallery's
        # 1,016 objects (seed 999) were dropped though cut well
        "min_segment_area": 0.001,
        "work_max_side": 512,
        # this small model's whole-image vectors are weak, its segment vectors strong: 0.2 / 0.8 was chosen on
        # grid scenes (seed 77), 0.1 / 0.9 on varied ones (seed 999, where 0.2 let a high whole-image similarity
        # carry an image whose second object was weak); training used 7 and 17, the benchmarks 2026 and 4242
        "weight_image": 0.1,
        "weight_segment": 0.9,
    },
}


class SettingsError(ValueError):
    """A setting has a value irs cannot use; the message names it."""

    def __init__(self, message: str, setting: str = "") -> None:
        super().__init__(message)
        self.setting = setting  # the field to blame, so load_settings can add where its value came from


# Readers turn a value from code, a TOML file or the environment (always text) into the field's type.
# They raise TypeError or ValueError for a value of the wrong kind; bool is refused where a number is due.


def _read_int(raw: Any) -> int:
    if isinstance(raw, str):
        return int(raw)  # "2.5" and "lots" raise
    if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
        return int(raw)
    raise TypeError


def _read_float(raw: Any) -> float:
    if isinstance(raw, str) or (isinstance(raw, numbers.Real) and not isinstance(raw, bool)):
        value = float(raw)  # OverflowError for an int beyond float's range
        if math.isfinite(value):
            return value
        raise ValueError
    raise TypeError


def _read_text(raw: Any) -> str:
    text = os.fspath(raw) if isinstance(raw, os.PathLike) else raw
    if isinstance(text, str):
        return text
    raise TypeError


def _read_list(raw: Any) -> tuple[str, ...]:
    """A list, or comma-separated text; each item stripped of surrounding space, empty ones dropped."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise TypeError
    return tuple(item for item in (_read_text(i).strip() for i in items) if item)


def _read_extensions(raw: Any) -> tuple[str, ...]:
    # file suffixes compare case-insensitively; ".jpg" and "jpg" mean the same
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in _read_list(raw))


@dataclass(frozen=True)
class _Rule:
    read: Callable[[Any], Any]
    ok: Callable[[Any], bool]
    problem: str  # finishes the message "setting 'name': VALUE ..."


def _range(
    read: Callable[[Any], Any], low: float, high: float | None = None, *, above: bool = False, below: bool = False
) -> _Rule:
    """Numbers from `low` (or just `above` it) up to `high` (or just `below` it)."""

    def ok(value: float) -> bool:
        return (value > low if above else value >= low) and (high is None or (value < high if below else value <= high))

    bounds = f"{'>' if above else '>='} {low}" + ("" if high is None else f" and {'<' if below else '<='} {high}")
    kind = "a whole number" if read is _read_int else "a finite number"
    return _Rule(read, ok, f"is not allowed (must be {kind} {bounds})")


def _choice(*options: str) -> _Rule:
    return _Rule(_read_text, lambda value: value in options, "is not one of " + ", ".join(options))


def _anything(value: Any) -> bool:
    return True


def _text(required: bool = False) -> _Rule:
    if required:
        return _Rule(_read_text, lambda value: bool(value.strip()), "is not allowed (must be non-empty text)")
    return _Rule(_read_text, _anything, "is not allowed (must be text)")


_COUNT = _range(_read_int, 1)
_WEIGHT = _range(_read_float, 0)
_FRACTION = _range(_read_float, 0, 1)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
_SUFFIX = re.compile(r"\.[^\s./\\]+")  # one suffix as Path.suffix gives it: ".jpg", never ".tar.gz" or "."

# One rule per field (tests check none is missing).
_RULES: dict[str, _Rule] = {
    "db": _text(required=True),
    "profile": _Rule(_read_text, lambda value: value in PROFILES, "is not one of " + ", ".join(PROFILES)),
    "cache_dir": _text(required=True),
    "extensions": _Rule(
        _read_extensions,
        lambda value: bool(value) and all(_SUFFIX.fullmatch(e) for e in value),
        "is not allowed (must be a non-empty list of file suffixes like .jpg)",
    ),
    "max_pixels": _COUNT,
    "work_max_side": _COUNT,
    "decode_timeout": _range(_read_float, 0, above=True),
    "clip_model": _text(required=True),
    "clip_pretrained": _text(),
    "device": _Rule(_read_text, lambda v: bool(_DEVICE.fullmatch(v)), "is not one of auto, cpu, cuda, cuda:N, mps"),
    "batch_size": _COUNT,
    "load_workers": _range(_read_int, 0),
    "segment_background": _choice("grey", "blur", "keep"),
    "crop_padding": _range(_read_float, 0, 10),
    "segmenter": _choice("sam", "components", "none", "oracle"),  # oracle: the benchmark passes the segmenter in
    "sam_model_type": _choice("vit_h", "vit_l", "vit_b", "vit_t", "tiny"),
    "sam_checkpoint": _text(),
    "sam_generator": _choice("batched", "stock"),
    "sam_batch": _COUNT,
    "points_per_side": _COUNT,
    "points_per_batch": _COUNT,
    "pred_iou_thresh": _FRACTION,
    "stability_score_thresh": _FRACTION,
    "box_nms_thresh": _FRACTION,
    "min_mask_region_area": _range(_read_int, 0),
    "min_segment_area": _range(_read_float, 0, 1, below=True),  # 1 would drop every segment
    "segment_dedup_iou": _FRACTION,
    "max_segments": _COUNT,
    "mask_max_side": _COUNT,
    "weight_image": _WEIGHT,
    "weight_segment": _WEIGHT,
    "weight_position": _WEIGHT,
    "weight_relation": _WEIGHT,
    "weight_negative": _WEIGHT,
    "weight_all": _range(_read_float, 0, 1),
    "text_dtype": _choice("auto", "float32", "bfloat16", "int8"),
    "image_pool": _range(_read_int, 0),  # search takes at least k candidates, so 0 means k
    "segment_pool": _range(_read_int, 0),
    "allowed_roots": _Rule(_read_list, _anything, "is not allowed (must be a list of folders, or text with commas)"),
    "chroma_host": _text(),
    "chroma_port": _range(_read_int, 1, 65535),
    "chroma_retry_seconds": _range(_read_float, 0),
    "chroma_ef_search": _COUNT,
    "lock_timeout": _range(_read_float, 0),
}


def _check(name: str, raw: Any) -> Any:
    """The value of setting `name` in its field's type, or a SettingsError naming the setting and what is allowed."""
    rule = _RULES[name]
    try:
        value = rule.read(raw)
    except (TypeError, ValueError, OverflowError):
        value, ok = raw, False
    else:
        ok = rule.ok(value)
    if not ok:
        raise SettingsError(f"setting {name!r}: {value!r} {rule.problem}", name)
    return value


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """{field: IRS_* variable name} for the variables that name a setting (IRS_CONFIG and others do not)."""
    return {key[4:].lower(): key for key in environ if key.startswith("IRS_") and key[4:].lower() in _RULES}


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings: defaults < profile < irs.toml < IRS_* environment < overrides.

    A bad value raises SettingsError naming the setting, the value, what is allowed and where it came from.
    """
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_keys = _from_env(environ)
    env_values = {name: environ[key] for name, key in env_keys.items()}

    db = overrides.get("db") or env_values.get("db") or Settings.db
    config_path = Path(environ.get("IRS_CONFIG") or Path(str(db)).expanduser() / "irs.toml")
    file_values: dict[str, Any] = {}
    if config_path.is_file():
        try:
            file_values = tomllib.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise SettingsError(f"{config_path}: not a readable TOML file ({err})") from None

    layers: list[tuple[Mapping[str, Any], Callable[[str], str]]] = [
        (file_values, lambda name: str(config_path)),
        (env_values, lambda name: f"environment {env_keys[name]}"),
        (overrides, lambda name: "arguments"),
    ]
    profile, sources = "default", {}
    for layer, source in layers:
        if layer.get("profile") not in (None, ""):  # an empty IRS_PROFILE means the default
            profile, sources["profile"] = layer["profile"], source("profile")
    try:
        profile = _check("profile", profile)
        layers.insert(0, (PROFILES[profile], lambda name: f"profile {profile}"))
        values: dict[str, Any] = {}
        for layer, source in layers:
            for name, raw in layer.items():
                if name not in _RULES:
                    raise SettingsError(f"unknown setting {name!r} (from {source(name)})")
                if name != "profile":
                    values[name], sources[name] = raw, source(name)
        if isinstance(values.get("db"), str):
            values["db"] = str(Path(values["db"]).expanduser())
        return Settings(profile=profile, **values)
    except SettingsError as err:
        if err.setting not in sources:
            raise
        raise SettingsError(f"{err} (from {sources[err.setting]})", err.setting) from None


def write_config(settings: Settings) -> None:
    """On creation, record the profile and index settings in db/irs.toml so reopening needs no flags."""
    path = Path(settings.db) / "irs.toml"
    if path.exists():
        return
    lines = [
        "# Written when this database was created. Index settings must stay as they are.",
        f"profile = {_toml(settings.profile)}",
    ]
    lines += [f"{k} = {_toml(getattr(settings, k))}" for k in INDEX_FIELDS]  # settings only, not derived values
    # written aside and linked into place: a process opening the database at the same moment
    # sees the whole file or none
    part = path.with_name(f".irs.toml.{os.getpid()}.{threading.get_ident()}")
    part.write_text("\n".join(lines) + "\n")
    try:
        os.link(part, path)
    except FileExistsError:
        pass
    finally:
        part.unlink()


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
