"""The serving call with and without the subtype head, timed call by call alternately (issue 36 item 4;
docs/generalisation.md).

Two artifacts (the default model before ``python -m ml subtype`` and after it) run
``Predictor.predict_with_cam`` at batch 1 on the same films, the order swapped every round, so that a shared
machine's changing load falls on both alike. Prints both p50s, their ratio and the paired median difference.

    cp -r ml/default_model var/before    # before python -m ml subtype; or a checkout of the earlier artifact
    python docs/ml/experiments/subtype_ab_latency.py --before var/before --after ml/default_model --rounds 400

About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ml.serving.films import list_images, load_images  # noqa: E402
from ml.serving.inference import Predictor  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--films", default="../shared/data/chest_xray", help="data folder; its external/ films")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    images = load_images(list_images(Path(args.films), "external")[::8], input_size=224)
    models = {name: Predictor.from_artifact(getattr(args, name), intra_op_threads=args.threads)
              for name in ("before", "after")}  # fmt: skip
    for predictor in models.values():
        for image in images[:5]:
            predictor.predict_with_cam(image[None])
    times: dict[str, list[float]] = {name: [] for name in models}
    load_start = os.getloadavg()
    for round_ in range(args.rounds):
        for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
            started = time.perf_counter()
            models[name].predict_with_cam(images[round_ % len(images)][None])
            times[name].append(1000 * (time.perf_counter() - started))
    before, after = np.array(times["before"]), np.array(times["after"])
    print(json.dumps({
        "rounds": args.rounds,
        "before_p50_ms": float(np.median(before)),
        "after_p50_ms": float(np.median(after)),
        "ratio_p50": float(np.median(after) / np.median(before)),
        "paired_median_difference_ms": float(np.median(after - before)),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
