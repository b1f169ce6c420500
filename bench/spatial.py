"""The synthetic spatial benchmark: `make bench-spatial`.

A gallery of synthetic scenes (a seed the small CLIP never saw in training), four query families with
ground truth, each indexed with the weight-free `components` segmenter and with `oracle` (ground-truth
masks), each scored in three modes: whole_image (CLIP alone), segments (segments without positions),
segments_positions (the full system). Prints the ablation table with PASS/FAIL against the targets
and writes bench/results/spatial.json.

    python bench/spatial.py                                   # 1,000 scenes, 100 queries per family
    python bench/spatial.py --gallery 200 --per-family 20     # quicker, not the reported numbers
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import write_json  # noqa: E402

from irs.benchmark import FAMILIES, spatial_benchmark  # noqa: E402
from irs.evaluate import MODES, format_table  # noqa: E402
from irs.index import Index  # noqa: E402
from irs.settings import load_settings  # noqa: E402

EVAL_SEED = 2026  # bench/train_synthetic_clip.py trains on seed 7


def targets(result: dict) -> list[dict]:
    """The issue's targets as rows: name, value, target, pass."""
    rows = []
    comp = result["by_segmenter"].get("components")
    if comp:
        full, whole = comp["segments_positions"], comp["whole_image"]
        for family in ("absolute", "relation"):
            rows.append(
                {
                    "name": f"components {family} R@1 (full system)",
                    "value": full[family]["r1"],
                    "target": ">= 0.85",
                    "pass": full[family]["r1"] >= 0.85,
                }
            )
            gain = full[family]["r1"] - whole[family]["r1"]
            rows.append(
                {
                    "name": f"components {family} R@1 gain over whole image",
                    "value": round(gain, 4),
                    "target": ">= 0.20",
                    "pass": gain >= 0.2,
                    "note": "whole-image baseline above 0.65" if whole[family]["r1"] > 0.65 else "",
                }
            )
        rows.append(
            {
                "name": "components attribute R@1, full minus whole image",
                "value": round(full["attribute"]["r1"] - whole["attribute"]["r1"], 4),
                "target": ">= 0",
                "pass": full["attribute"]["r1"] >= whole["attribute"]["r1"],
            }
        )
        loc = full["all"]["loc_acc"]
        rows.append(
            {
                "name": "components localization accuracy",
                "value": loc,
                "target": ">= 0.80",
                "pass": loc is not None and loc >= 0.8,
            }
        )
    oracle = result["by_segmenter"].get("oracle")
    if oracle:
        loc = oracle["segments_positions"]["all"]["loc_acc"]
        rows.append(
            {
                "name": "oracle localization accuracy",
                "value": loc,
                "target": ">= 0.90",
                "pass": loc is not None and loc >= 0.9,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=1000)
    parser.add_argument("--per-family", type=int, default=100)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--segmenters", default="components,oracle")
    parser.add_argument("--checkpoint", default="", help="another irs-small checkpoint (default: the bundled one)")
    parser.add_argument("--work", default=str(ROOT / "bench/out/spatial"))
    parser.add_argument("--json", default=str(ROOT / "bench/results/spatial.json"))
    args = parser.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)

    def index_for(name: str, oracle: object) -> Index:
        # the demo profile: the small CLIP, and the fusion weights chosen on a development gallery
        overrides = {
            "profile": "demo",
            "db": str(work / f"db-{name}"),
            "segmenter": name,
            "work_max_side": 256,
            "device": "cpu",
        }
        if args.checkpoint:
            overrides["clip_pretrained"] = args.checkpoint
        settings = load_settings(overrides, environ={})
        return Index(settings, segmenter=oracle)

    result = spatial_benchmark(index_for, work, args.gallery, args.per_family, args.seed, args.segmenters.split(","))
    keys = ("r1", "r5", "r10", "map", "ndcg10", "loc_acc")
    for name, modes in result["by_segmenter"].items():
        for mode in MODES:
            print()
            print(format_table(f"segmenter={name} mode={mode}", modes[mode], keys))
    rows = targets(result)
    print("\ntarget".ljust(58) + "value".rjust(9) + "  want      result")
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        verdict = "PASS" if row["pass"] else "FAIL"
        print(f"{row['name']:<57}{value:>9}  {row['target']:<9} {verdict} {row.get('note', '')}")

    main_segmenter = "components" if "components" in result["by_segmenter"] else next(iter(result["by_segmenter"]))
    shaped = {
        "modes": {
            mode: {
                f: {k: result["by_segmenter"][main_segmenter][mode][f][k] for k in ("r1", "r5", "map", "loc_acc")}
                for f in FAMILIES
            }
            for mode in MODES
        },
        "segmenter": main_segmenter,
        "seed": args.seed,
        "gallery": result["gallery"],
        "queries": result["queries"],
        "by_segmenter": result["by_segmenter"],
        "targets": rows,
    }
    for family in FAMILIES:  # no segment is returned in whole-image mode
        shaped["modes"]["whole_image"][family]["loc_acc"] = None
    write_json(args.json, shaped)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
