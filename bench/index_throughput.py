"""Index throughput: images/s and segments/s of the real pipeline, against the bare model forward at the
same batch size, so the pipeline/bare ratio shows what loading, decoding and writing cost.

Images are generated 1024-px synthetic scenes saved as JPEG. Real architectures run with random weights
(the arithmetic is the same as with trained ones); SAM's quality thresholds are set to 0 so that random
masks survive and every image carries a realistic number of segments for CLIP to embed.

    python bench/index_throughput.py --quick                # under 2 minutes on this machine
    python bench/index_throughput.py --json bench/results/index_throughput.json
    python bench/index_throughput.py --gpu --images 200     # the H100 run (bench/gpu.sh)
    python bench/index_throughput.py --generators-only      # the CPU proxy for the GPU target (issue 12)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
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


def generator_rows(work: Path, quick: bool) -> list[dict]:
    """The CPU proxy for SAM on a GPU: with the same random-weight model and the same 16x16 point prompts,
    seconds per image of segment_anything's stock generator and irs's batched one (encoder included,
    and alone), and the mask decoder's time per 1,000 prompts at several prompt batch sizes."""
    from irs.load import load_image
    from irs.models import build_sam_architecture
    from irs.segment import BatchedSamSegmenter, SamSegmenter, segment_images

    folder = make_images(work / "generators", 1 if quick else 2)
    images = [load_image(str(p), 10**9, 1024).pixels for p in sorted(folder.glob("*.jpg"))]
    rows = []
    torch.manual_seed(0)
    for model_type in ["vit_t"] if quick else ["vit_t", "vit_b"]:
        sam = build_sam_architecture(model_type).eval()
        s = load_settings(
            {"db": str(work / "unused"), "sam_model_type": model_type, "points_per_side": 16, **PERMISSIVE_SAM},
            environ={},
        )
        used = images[:1] if model_type == "vit_b" else images  # 30-50 s per encoder pass on this CPU
        timings = {}
        for name, segmenter in [("stock", SamSegmenter(sam, s)), ("batched", BatchedSamSegmenter(sam, s))]:
            t0 = time.perf_counter()
            kept = [len(segment_images(segmenter, [pixels], s)[0]) for pixels in used]
            timings[name] = (time.perf_counter() - t0) / len(used)
            rows.append(
                row(f"{model_type} 16x16: {name} generator ({sum(kept)} segments kept)", timings[name], "s/image")
            )
        predictor_input = BatchedSamSegmenter(sam, s)
        with torch.inference_mode():
            resized = predictor_input.transform.apply_image(used[0])
            x = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1).float())[None]
            t0 = time.perf_counter()
            embedding = sam.image_encoder(x)
            encoder = time.perf_counter() - t0
        ratio = timings["stock"] / timings["batched"]
        rows += [
            row(f"{model_type}: image encoder alone", encoder, "s/image"),
            row(f"{model_type}: stock / batched, whole image", ratio, "x"),
            row(
                f"{model_type}: stock / batched, after the encoder",
                (timings["stock"] - encoder) / max(timings["batched"] - encoder, 1e-9),
                "x",
            ),
        ]
        if model_type == "vit_t":  # the mask decoder is the same for every SAM size
            rows += decoder_rows(sam, embedding, quick)
    return rows


def decoder_rows(sam: torch.nn.Module, embedding: torch.Tensor, quick: bool) -> list[dict]:
    """Prompt encoder + mask decoder (3 masks per prompt) per 1,000 point prompts on one image embedding."""
    rows = []
    points = torch.rand(1000, 1, 2) * 1024
    labels = torch.ones(1000, 1, dtype=torch.int64)
    dense_pe = sam.prompt_encoder.get_dense_pe()
    for batch in [64, 256] if quick else [64, 256, 1000]:
        for dtype in ["fp32", "bf16"]:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bf16"):
                t0 = time.perf_counter()
                for start in range(0, 1000, batch):
                    sparse, dense = sam.prompt_encoder(
                        points=(points[start : start + batch], labels[start : start + batch]), boxes=None, masks=None
                    )
                    sam.mask_decoder(
                        image_embeddings=embedding,
                        image_pe=dense_pe,
                        sparse_prompt_embeddings=sparse,
                        dense_prompt_embeddings=dense,
                        multimask_output=True,
                    )
                rows.append(
                    row(f"mask decoder, 1,000 prompts, batches of {batch}, {dtype}", time.perf_counter() - t0, "s")
                )
    return rows


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
    parser.add_argument("--generators-only", action="store_true", help="only the stock vs batched SAM rows")
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
        rows = generator_rows(work, args.quick)
        print_table("SAM mask generators on this CPU: stock vs batched (a proxy for the GPU target)", rows)
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

    rows += generator_rows(work, args.quick)
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
