"""The weight-free segmenter with its background filter off and on: `python bench/segmenter.py`.

Segments per image (mean and 90th percentile), object recall (the share of ground-truth objects that some
stored segment covers at mask IoU >= 0.5) and milliseconds per image (segmenter and post-processing, one
process, one image at a time), with the demo profile's post-processing settings (min_segment_area,
segment_dedup_iou, max_segments, mask_max_side), on three sets of synthetic scenes:

    spatial   the spatial benchmark's gallery (seed 2026, 1,000 scenes); looked at while the filter was made
    unseen    seed 5151, 1,000 scenes: never looked at while the filter's tests and thresholds were chosen
    sample    the demo sample, `python -m irs sample sample --count 48 --seed 1`
    varied    the new spatial benchmark's gallery (varied scenes, seed 4242): made after the filter, never tuned on

    python bench/segmenter.py                      # ~6 minutes on 2 cores
    python bench/segmenter.py --scenes 200         # quicker, not the reported numbers
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import machine, write_json  # noqa: E402

from irs.benchmark import object_recall  # noqa: E402
from irs.segment import ComponentsSegmenter, segment_image  # noqa: E402
from irs.settings import Settings, load_settings  # noqa: E402
from irs.synthetic import Scene, make_scenes, make_varied_scenes  # noqa: E402

SPATIAL_SEED = 2026  # bench/spatial.py's gallery
UNSEEN_SEED = 5151  # chosen before the filter was tuned and not looked at until this benchmark ran
VARIED_SEED = 4242  # bench/spatial.py's new benchmark
SAMPLE_SEED, SAMPLE_COUNT = 1, 48  # `python -m irs sample sample --count 48 --seed 1`


def measure(scenes: list[Scene], segmenter: ComponentsSegmenter, settings: Settings) -> dict:
    """Segment every scene as indexing does (segmenter, then post-processing): counts, recall, time."""
    segment_image(segmenter, scenes[0].image, settings)  # first-call costs (cv2, allocations) out of the timing
    segments, seconds = [], []
    for scene in scenes:
        started = time.perf_counter()
        segments.append(segment_image(segmenter, scene.image, settings))
        seconds.append(time.perf_counter() - started)
    counts = np.array([len(s) for s in segments])
    return {
        "segments": int(counts.sum()),
        "segments_per_image": round(float(counts.mean()), 3),
        "segments_per_image_p90": float(np.percentile(counts, 90)),
        "object_recall_iou50": round(object_recall(scenes, segments, 0.5), 4),
        "ms_per_image": round(1000 * float(np.mean(seconds)), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=1000, help="scenes for the spatial and unseen seeds")
    parser.add_argument("--json", default=str(ROOT / "bench/results/segmenter.json"))
    args = parser.parse_args()

    # the demo profile's post-processing, as `irs index --profile demo` stores segments
    settings = load_settings({"profile": "demo", "device": "cpu"}, environ={})
    sets = {
        "spatial": (SPATIAL_SEED, args.scenes, "the spatial benchmark's gallery (looked at while tuning)"),
        "unseen": (UNSEEN_SEED, args.scenes, "a seed never looked at while tuning"),
        "sample": (SAMPLE_SEED, SAMPLE_COUNT, "the demo sample (irs sample --count 48 --seed 1)"),
        "varied": (VARIED_SEED, args.scenes, "the new benchmark's varied scenes, never tuned on"),
    }
    print(machine())
    print(
        f"post-processing of the demo profile: min_segment_area {settings.min_segment_area}, segment_dedup_iou "
        f"{settings.segment_dedup_iou}, max_segments {settings.max_segments}, mask_max_side {settings.mask_max_side}"
    )
    results: dict[str, dict] = {}
    for name, (seed, count, about) in sets.items():
        # as bench/spatial.py and `irs sample` write them: 256-px grid scenes, or varied ones
        scenes = make_varied_scenes(count, seed) if name == "varied" else make_scenes(count, seed)
        objects = sum(len(s.objects) for s in scenes)
        results[name] = {"seed": seed, "scenes": count, "objects": objects, "about": about}
        for label, flag in (("filter off", False), ("filter on", True)):
            results[name][label] = measure(scenes, ComponentsSegmenter(background_filter=flag), settings)
            print(f"{name} (seed {seed}) {label}: {results[name][label]}", flush=True)

    header = f"{'set':<9}{'seed':>6}{'scenes':>8}{'objects':>9}  {'filter':<7}"
    header += f"{'segments':>10}{'seg/img':>9}{'p90':>6}{'recall@0.5':>12}{'ms/img':>8}"
    print("\n" + header)
    for name, r in results.items():
        for label in ("filter off", "filter on"):
            m = r[label]
            print(
                f"{name:<9}{r['seed']:>6}{r['scenes']:>8}{r['objects']:>9}  {label.split()[1]:<7}"
                f"{m['segments']:>10}{m['segments_per_image']:>9.2f}{m['segments_per_image_p90']:>6.0f}"
                f"{m['object_recall_iou50']:>12.4f}{m['ms_per_image']:>8.1f}"
            )
    for name, r in results.items():
        off, on = r["filter off"], r["filter on"]
        change = 100 * (on["object_recall_iou50"] - off["object_recall_iou50"])
        print(
            f"{name} (seed {r['seed']}, {r['about']}): segments per image {off['segments_per_image']:.2f} -> "
            f"{on['segments_per_image']:.2f}, recall {change:+.2f} points"
        )
    write_json(args.json, {"machine": machine(), "settings": "demo profile", **results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
