"""Index throughput: images/s and segments/s of the real pipeline, against the bare model forward at the
same batch size, so the pipeline/bare ratio shows what loading, decoding and writing cost.

Images are generated 1024-px synthetic scenes saved as JPEG. Real architectures run with random weights
(the arithmetic is the same as with trained ones); SAM's quality thresholds are set to 0 so that random
masks survive and every image carries a realistic number of segments for CLIP to embed.

    python bench/index_throughput.py --quick                # under 2 minutes here, plus 1.5 for the generators
    python bench/index_throughput.py --json bench/results/index_throughput.json
    python bench/index_throughput.py --gpu --images 200     # the H100 run (bench/gpu.sh)
    python bench/index_throughput.py --generators-only --json bench/results/index_throughput_generators.json  # 14 min

The generators section (run by default, alone with --generators-only) times, on one random-weight model and
the same images, segment_anything's stock SamAutomaticMaskGenerator against irs's BatchedSamSegmenter, the
image encoder alone, and the mask decoder per 1,000 point prompts at several decoder batch sizes, fp32 and
bf16: the CPU proxy for the GPU target (the decoder and filters are most of SAM's time per image there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import print_table, row, write_json  # noqa: E402

from irs.settings import Settings, load_settings  # noqa: E402

# random weights make near-identical masks: no NMS and no dedup, so each image keeps max_segments (32)
PERMISSIVE_SAM = {
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
    "segment_dedup_iou": 1.0,
}


def make_images(folder: Path, count: int, side: int = 1024) -> Path:
    from PIL import Image

    from irs.synthetic import make_scenes

    folder.mkdir(parents=True, exist_ok=True)
    for scene in make_scenes(count, seed=99, side=side):
        Image.fromarray(scene.image).save(folder / f"img_{scene.index:05d}.jpg", quality=90)
    return folder


def bare_forward(settings: Settings, batch: int, seconds: float = 8.0) -> float:
    """Images/s of the CLIP image tower alone on ready tensors, at the pipeline's batch size."""
    from irs.embed import Embedder
    from irs.models import load_clip

    clip = load_clip(settings.clip_model, settings.clip_pretrained, settings.device)
    emb = Embedder(clip, batch)
    size = clip.model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    x = torch.randn(batch, 3, size, size)
    emb.encode_pixels(x)  # warm up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        emb.encode_pixels(x)
        done += batch
    return done / (time.perf_counter() - t0)


def index_run(settings: Settings, folder: Path, segment: bool) -> tuple[float, float, int]:
    """(images/s, segments/s, segments) of Index.add_folder on a fresh database, model loading excluded."""
    from irs.index import Index

    shutil.rmtree(settings.db, ignore_errors=True)
    with Index(settings) as index:
        _ = index.embedder
        if segment:
            _ = index.segmenter
        t0 = time.perf_counter()
        report = index.add_folder(folder, segment=segment)
        seconds = time.perf_counter() - t0
        segments = index.stats().segments
    assert report.added == len(list(folder.glob("*.jpg"))), report
    return report.added / seconds, segments / seconds, segments


def compute_run(settings: Settings, folder: Path) -> tuple[float, float, int]:
    """The pipeline's compute path without the database (for a GPU machine without Chroma): decode ahead,
    CLIP on whole images, SAM in encoder batches, CLIP on every segment crop. Same functions as Index."""
    from PIL import Image

    from irs.embed import Embedder
    from irs.load import load_image
    from irs.models import load_clip
    from irs.pipeline import prefetch
    from irs.segment import make_segmenter, segment_images

    clip = load_clip(settings.clip_model, settings.clip_pretrained, settings.device)
    emb = Embedder(clip, settings.batch_size, settings.segment_background, settings.crop_padding)
    segmenter = make_segmenter(settings)
    files = sorted(folder.glob("*.jpg"))

    def load(path: Path) -> tuple[np.ndarray, torch.Tensor]:
        image = load_image(str(path), settings.max_pixels, settings.work_max_side)
        return image.pixels, clip.preprocess(Image.fromarray(image.pixels))

    warm = load(files[0])
    segment_images(segmenter, [warm[0]], settings)
    emb.encode_pixels(warm[1][None])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def sync() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    spent = {"whole-image CLIP": 0.0, "SAM + post-processing": 0.0, "segment crops": 0.0, "segment CLIP": 0.0}
    t0 = time.perf_counter()
    segments_total, group, crops = 0, [], []  # crops: model-ready tensors waiting for one CLIP batch
    for n, (_, (pixels, tensor)) in enumerate(prefetch(load, files, settings.load_workers, 4 * settings.sam_batch), 1):
        group.append((pixels, tensor))
        if len(group) == settings.sam_batch or n == len(files):
            t = sync()
            emb.encode_pixels(torch.stack([t for _, t in group]))
            t, spent["whole-image CLIP"] = sync(), spent["whole-image CLIP"] + sync() - t
            results = segment_images(segmenter, [p for p, _ in group], settings)
            t, spent["SAM + post-processing"] = sync(), spent["SAM + post-processing"] + sync() - t
            for (px, _), segs in zip(group, results):
                crops.append(emb.segment_pixels(px, segs))
                segments_total += len(segs)
            t, spent["segment crops"] = sync(), spent["segment crops"] + sync() - t
            if sum(len(c) for c in crops) >= settings.batch_size or n == len(files):
                emb.encode_pixels(torch.cat(crops))
                crops = []
            spent["segment CLIP"] += sync() - t
            group = []
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(
        "time per image: "
        + ", ".join(f"{k} {v / len(files) * 1000:.1f} ms" for k, v in spent.items())
        + f"; total {seconds / len(files) * 1000:.1f} ms",
        flush=True,
    )
    return len(files) / seconds, segments_total / seconds, segments_total


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def decoder_seconds(sam: torch.nn.Module, embedding: torch.Tensor, coords: torch.Tensor, batch: int) -> list[float]:
    """Wall time of each decoder batch (prompt encoder + mask decoder, 3 masks per prompt) over the point
    prompts `coords` (n, 1, 2) on one image embedding: the same calls BatchedSamSegmenter makes."""
    from irs.pipeline import chunks

    dense_pe = sam.prompt_encoder.get_dense_pe()
    times = []
    for batch_coords in chunks(coords, batch):
        t0 = time.perf_counter()
        labels = torch.ones(batch_coords.shape[:2], dtype=torch.int64)
        sparse, dense = sam.prompt_encoder(points=(batch_coords, labels), boxes=None, masks=None)
        sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        times.append(time.perf_counter() - t0)
    return times


def generators_section(work: Path, quick: bool) -> list[dict]:
    """Stock vs batched SAM mask generator per image on the same random-weight model and images, the encoder
    alone, and the decoder per 1,000 prompts at several batch sizes in fp32 and bf16 (CPU autocast).

    SAM's decoder costs about a quarter of a second per prompt on this CPU (each prompt runs the two-way
    transformer over all 4,096 image tokens), so each generator runs once per image and the image counts
    are small; --quick uses MobileSAM only and 4x4 points."""
    from segment_anything.utils.amg import build_point_grid
    from segment_anything.utils.transforms import ResizeLongestSide

    from irs.load import load_image
    from irs.models import build_sam_architecture
    from irs.segment import BatchedSamSegmenter, SamSegmenter, make_segmenter, segment_image

    side = 4 if quick else 16
    grid = f"{side}x{side} points"
    # one image: with 768 candidate masks the stock generator alone takes minutes per image on this CPU
    folder = make_images(work / "generators", 1)
    rows = []
    decoder_model: tuple[torch.nn.Module, torch.Tensor, np.ndarray] | None = None
    for model_type in ["vit_t"] if quick else ["vit_t", "vit_b"]:
        ckpt = work / f"sam_{model_type}_random.pth"
        torch.manual_seed(0)  # the same random weights, so the same candidates pass the filters, in every run
        torch.save(build_sam_architecture(model_type).state_dict(), ckpt)
        base = {
            "db": str(work / "db-generators"),
            "device": "cpu",
            "sam_model_type": model_type,
            "sam_checkpoint": str(ckpt),
            "points_per_side": side,
            **PERMISSIVE_SAM,
            # not 0: at 0 segment_anything skips its quality filters altogether while irs's generator still
            # drops predicted IoU <= 0 (most random-weight masks), so the two would keep different candidates
            "pred_iou_thresh": 1e-6,
            "stability_score_thresh": 1e-6,
        }
        settings = {g: load_settings({**base, "sam_generator": g}, environ={}) for g in ("stock", "batched")}
        # one checkpoint file: both generators run the same weights
        stock, batched = make_segmenter(settings["stock"]), make_segmenter(settings["batched"])
        assert isinstance(stock, SamSegmenter) and isinstance(batched, BatchedSamSegmenter)
        s = settings["batched"]
        files = sorted(folder.glob("*.jpg"))
        pictures = [load_image(str(p), s.max_pixels, s.work_max_side).pixels for p in files]

        sam = batched.sam
        resized = batched.transform.apply_image(pictures[0])
        x = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1).float())[None]
        with torch.inference_mode():
            encoder = median_seconds(partial(sam.image_encoder, x), 2 if model_type == "vit_b" else 3)
            if decoder_model is None:  # the decoder is the same architecture in every SAM type: time it once
                decoder_model = (sam, sam.image_encoder(x), pictures[0])

        spent: dict[str, list[float]] = {"stock": [], "batched": []}
        found: dict[str, list[int]] = {"stock": [], "batched": []}
        for pixels in pictures:  # each image once through each generator, alternating (the CPU is shared)
            for name, segmenter in (("stock", stock), ("batched", batched)):
                t0 = time.perf_counter()
                segments = segment_image(segmenter, pixels, settings[name])
                spent[name].append(time.perf_counter() - t0)
                found[name].append(len(segments))
        n = len(pictures)
        stock_s, batched_s = float(np.median(spent["stock"])), float(np.median(spent["batched"]))
        label = f"{'MobileSAM' if model_type == 'vit_t' else 'SAM'} {model_type}, {grid}"
        rows += [
            row(f"{label}: stock generator, per image (median of {n})", stock_s, "s"),
            row(f"{label}: batched generator, per image (median of {n})", batched_s, "s"),
            row(f"{label}: stock / batched", stock_s / batched_s, "x"),
            row(f"{label}: image encoder alone, per image", encoder, "s"),
            row(f"{label}: decoder + filters share of batched", (batched_s - encoder) / batched_s, "fraction"),
            row(f"{label}: segments per image, stock", float(np.mean(found["stock"])), "segments"),
            row(f"{label}: segments per image, batched", float(np.mean(found["batched"])), "segments"),
        ]
        print(f"{label}: done ({time.strftime('%H:%M:%S')})", flush=True)

    # the decoder per 1,000 prompts, on one image embedding, over the generators' own point grid
    sam, embedding, pixels = decoder_model
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    h, w = pixels.shape[:2]
    points = transform.apply_coords(build_point_grid(side) * np.array([w, h]), (h, w))
    coords = torch.as_tensor(points, dtype=torch.float32)[:, None, :]
    prompts = len(coords)
    batches = (4, 16) if quick else (64, 256)
    reference: torch.Tensor | None = None
    for dtype in ("fp32", "bf16"):
        # autocast is what irs uses on a GPU (irs.models.autocast); on a CPU irs runs fp32
        context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
        with torch.inference_mode(), context:
            for batch in batches:
                times = decoder_seconds(sam, embedding, coords, batch)
                per_1000 = float(np.median(times)) / batch * 1000
                rows.append(
                    row(
                        f"decoder per 1,000 prompts, points_per_batch {batch}, {dtype} "
                        f"(median of {len(times)} batches over {prompts} prompts)",
                        per_1000,
                        "s",
                    )
                )
            # how far bf16 moves the decoder's masks: low-res mask pixels whose sign flips against fp32
            labels = torch.ones((batches[0], 1), dtype=torch.int64)
            sparse, dense = sam.prompt_encoder(points=(coords[: batches[0]], labels), boxes=None, masks=None)
            low_res, _ = sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            if reference is None:
                reference = low_res.float() > sam.mask_threshold
            else:
                flipped = ((low_res.float() > sam.mask_threshold) != reference).float().mean()
                rows.append(row("decoder bf16 vs fp32: low-res mask pixels that flip", float(flipped), "fraction"))
    fp32 = {r["name"].split(", ")[1]: r["value"] for r in rows if "fp32 (median" in r["name"]}
    bf16 = {r["name"].split(", ")[1]: r["value"] for r in rows if "bf16 (median" in r["name"]}
    for key in fp32:
        rows.append(row(f"decoder fp32 / bf16 time, {key}", fp32[key] / bf16[key], "x"))
    return rows


def peak_rss_mib(count: int, work: Path) -> float:
    """Peak RSS of an `irs index` process over `count` generated images (test profile, segments on),
    read by a fresh parent whose only child it is."""
    folder = make_images(work / f"mem-{count}", count, side=512)
    env = {**os.environ, "IRS_PROFILE": "test", "PYTHONPATH": str(ROOT)}
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [sys.executable, "-m", "irs", "--db", str(work / f"mem-db-{count}"), "index", str(folder), "--quiet"]
    out = subprocess.run([sys.executable, "-c", probe, *command], env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="SAM vit_h + ViT-B-32 in bf16 on cuda, compute path")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--memory", action="store_true", help="also peak RSS at 500 and 2,000 images")
    parser.add_argument("--memory-only", action="store_true", help="only the peak RSS rows")
    parser.add_argument(
        "--generators-only", action="store_true", help="only stock vs batched SAM generator and decoder rows"
    )
    parser.add_argument("--json")
    parser.add_argument("--work", default=str(ROOT / "bench/out/throughput"))
    args = parser.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    rows = []

    def settings_for(name: str, **kw: object) -> Settings:
        return load_settings({"db": str(work / f"db-{name}"), "clip_pretrained": "", **kw}, environ={})

    if args.gpu:
        count = args.images or 200
        folder = make_images(work / "images", count)
        s = settings_for(
            "gpu",
            clip_model="ViT-B-32",
            device="cuda",
            sam_model_type="vit_h",
            sam_batch=8,
            points_per_batch=1024,
            batch_size=256,
            load_workers=8,
            **PERMISSIVE_SAM,
        )
        # a random vit_h checkpoint, built here, loads through irs's normal local-checkpoint path
        from irs.models import build_sam_architecture

        ckpt = work / "sam_vit_h_random.pth"
        torch.save(build_sam_architecture("vit_h").state_dict(), ckpt)
        s = s.replace(sam_checkpoint=str(ckpt))
        ips, sps, segs = compute_run(s, folder)
        gib = torch.cuda.max_memory_allocated() / 2**30
        rows += [
            row(f"H100 SAM vit_h + ViT-B-32 bf16, {count} images: images/s", ips, "images/s", ">= 10", ips >= 10),
            row("segments/s (CLIP on every segment)", sps, "segments/s"),
            row("segments per image", segs / count, "segments"),
            row("GPU memory, peak allocated", gib, "GiB"),
            row("bare ViT-B-32 forward, batch 256", bare_forward(s.replace(batch_size=256), 256, 5), "images/s"),
        ]
        print_table("Index throughput on the GPU (compute path: Chroma writes not included)", rows)
        write_json(args.json, rows)
        return 0

    if args.memory_only:
        return report_memory(work, rows, args.json)
    if args.generators_only:
        rows = generators_section(work, args.quick)
        print_table("Batched vs stock SAM mask generator on this machine (CPU proxy for the GPU target)", rows)
        write_json(args.json, rows)
        return 0
    count = args.images or 200
    folder = make_images(work / "images", count)

    # whole images: the real pipeline (Chroma included) against the bare forward at the same batch size
    for name, model in [("tiny test model", "irs-tiny"), ("ViT-B-32", "ViT-B-32")]:
        s = settings_for(model, clip_model=model, device="cpu", batch_size=32)
        ips, _, _ = index_run(s, folder, segment=False)
        bare = bare_forward(s, 32)
        ratio = ips / bare
        rows += [
            row(f"{name}: whole-image indexing", ips, "images/s"),
            row(f"{name}: bare forward, batch 32", bare, "images/s"),
            row(
                f"{name}: pipeline / bare",
                ratio,
                "x",
                ">= 0.85" if model == "ViT-B-32" else None,
                ratio >= 0.85 if model == "ViT-B-32" else None,
            ),
        ]

    # with segments: each segmenter on a few images (SAM on a CPU is slow; that is the point of the numbers)
    few = make_images(work / "few", 2 if args.quick else 8)
    tiny_folder = make_images(work / "tiny", 24) if args.quick else folder
    configs = [
        ("tiny models, tiny SAM (stock generator)", dict(profile="test"), tiny_folder),
        ("ViT-B-32 + components (weight-free)", dict(clip_model="ViT-B-32", segmenter="components"), few),
    ]
    if not args.quick:  # SAM on a CPU takes tens of seconds per image: not for --quick
        configs.append(
            (
                "ViT-B-32 + MobileSAM vit_t, 16x16 points",
                dict(clip_model="ViT-B-32", sam_model_type="vit_t", points_per_side=16, **PERMISSIVE_SAM),
                few,
            )
        )
        configs.append(
            (
                "ViT-B-32 + SAM vit_b, 16x16 points",
                dict(clip_model="ViT-B-32", sam_model_type="vit_b", points_per_side=16, **PERMISSIVE_SAM),
                make_images(work / "two", 2),
            )
        )
    from irs.models import build_sam_architecture

    for name, kw, images in configs:
        s = settings_for(name.split(" ")[0] + str(len(rows)), device="cpu", **kw)
        if s.segmenter == "sam" and s.sam_model_type != "tiny":
            ckpt = work / f"sam_{s.sam_model_type}_random.pth"
            torch.save(build_sam_architecture(s.sam_model_type).state_dict(), ckpt)
            s = s.replace(sam_checkpoint=str(ckpt))
        n = len(list(images.glob("*.jpg")))
        ips, sps, segs = index_run(s, images, segment=True)
        rows += [
            row(f"{name}: indexing with segments ({n} images)", ips, "images/s"),
            row(f"{name}: segments/s", sps, "segments/s"),
        ]

    rows += generators_section(work, args.quick)

    if args.memory:
        return report_memory(work, rows, args.json)
    print_table("Index throughput on this machine (CPU)", rows)
    write_json(args.json, rows)
    return 0


def report_memory(work: Path, rows: list, json_path: str | None) -> int:
    small, large = peak_rss_mib(500, work), peak_rss_mib(2000, work)
    rows += [
        row("peak RSS, 500 images (test profile, segments)", small, "MiB", "<= 1536", small <= 1536),
        row("peak RSS, 2,000 images", large, "MiB", "<= 1536", large <= 1536),
        row("peak RSS growth 500 -> 2,000 images", large / small, "x", "<= 1.15", large / small <= 1.15),
    ]
    print_table("Index throughput on this machine (CPU)", rows)
    write_json(json_path, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
