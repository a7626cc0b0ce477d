"""Ablation for the generalisation work (docs/generalisation.md): which frozen ImageNet Xception
features, with which intensity normalisation, rank films of a new period (external/) best?

For each preprocessing variant, extracts global-average-pooled features of several Xception blocks
for every film of train/, external/ and val/ (cached as .npz), fits a class-balanced logistic
regression on the patient-grouped training part of train/ only, and prints validation and
external AUC per block and regularisation strength. Nothing is fitted on external/.

    PNEUMONIA_DATA_DIR=../shared/data/chest_xray IMAGENET_WEIGHTS_DIR=../shared/weights \
        python scripts/probe_ablation.py --variants squash,equalize --out var/probe

About 4 min per variant and 5,544 films on 2 cores, then seconds per probe.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.serving import films
from ml.serving.decode import decode_image_bytes  # noqa: E402
from ml.training import data  # noqa: E402

# Xception's residual Adds by position: 2 = end of the entry flow (block4), 3-10 = middle blocks 5-12.
ADDS = {"block4": 2, "block5": 3, "block6": 4, "block7": 5, "block8": 6, "block12": 10}


def pixels(path: Path, variant: str, size: int) -> np.ndarray:
    gray = decode_image_bytes(path.read_bytes(), target_size=size).pixels
    image = Image.fromarray(gray)
    if variant == "equalize":
        image = ImageOps.equalize(image)
    elif variant != "squash":
        raise SystemExit(f"unknown variant {variant}")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def extract(records: list[films.ImageRecord], variant: str, size: int, weights: Path) -> dict[str, np.ndarray]:
    import keras

    base = keras.applications.Xception(include_top=False, weights=str(weights), input_shape=(size, size, 3))
    adds = [layer for layer in base.layers if isinstance(layer, keras.layers.Add)]
    names = [*ADDS, "block14"]
    outputs = [keras.layers.GlobalAveragePooling2D()(adds[i].output) for i in ADDS.values()]
    outputs.append(keras.layers.GlobalAveragePooling2D()(base.output))
    model = keras.Model(base.input, outputs)
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(records), 64):
        batch = np.stack([pixels(r.path, variant, size) for r in records[start : start + 64]])
        x = np.repeat(batch[..., None], 3, axis=3) / 127.5 - 1.0  # Xception's own normalisation
        for k, out in enumerate(model.predict(x, verbose=0)):
            chunks[k].append(out.astype(np.float32))
    return {name: np.concatenate(chunk) for name, chunk in zip(names, chunks, strict=True)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="squash")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", default="var/probe")
    parser.add_argument("--C", default="0.001,0.01,0.1")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    root = Path(os.environ["PNEUMONIA_DATA_DIR"])
    weights = Path(os.environ["IMAGENET_WEIGHTS_DIR"]) / "xception_imagenet_notop.weights.h5"
    train_records = films.list_images(root, "train")
    fit_part, validation = data.grouped_split(train_records, val_fraction=0.2, seed=1337)
    in_validation = {r.path for r in validation}
    splits = {name: films.list_images(root, name) for name in ("external", "val")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("variant\tblock\tC\tvalidation AUC\texternal AUC\tval/ (16 full-size) AUC")
    for variant in args.variants.split(","):
        features = {}
        for name, records in {"train": train_records, **splits}.items():
            cache = out / f"{variant}-{args.size}-{name}.npz"
            if not cache.exists():
                started = time.time()
                np.savez(cache, **extract(records, variant, args.size, weights))
                print(f"# {variant} {name}: {len(records)} films in {time.time() - started:.0f} s", flush=True)
            features[name] = np.load(cache)
        is_val = np.array([r.path in in_validation for r in train_records])
        y = films.labels_of(train_records)
        for block in [*ADDS, "block14"]:
            x = features["train"][block]
            scaler = StandardScaler().fit(x[~is_val])
            for c in (float(v) for v in args.C.split(",")):
                probe = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
                probe.fit(scaler.transform(x[~is_val]), y[~is_val])

                def auc(matrix: np.ndarray, labels: np.ndarray, probe=probe, scaler=scaler) -> float:
                    return float(roc_auc_score(labels, probe.predict_proba(scaler.transform(matrix))[:, 1]))

                print(
                    f"{variant}\t{block}\t{c}\t{auc(x[is_val], y[is_val]):.4f}"
                    f"\t{auc(features['external'][block], films.labels_of(splits['external'])):.4f}"
                    f"\t{auc(features['val'][block], films.labels_of(splits['val'])):.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
