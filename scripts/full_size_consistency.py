"""Full-size films against their 224 px copies (issue 12, item 5; docs/generalisation.md).

For every film in a folder (the 16 official val films are full size), the served model's score of the
film as uploaded is compared with its score of the same film downscaled to 224 px by a standard
resampler (bilinear, bicubic, Lanczos, box) and saved as PNG (lossless) or JPEG q95. Prints, per copy
kind, the largest difference, how many films differ by more than 0.05 and how many would change label
at the model's threshold; then every film's scores.

    python scripts/full_size_consistency.py --artifact ml/default_model --films ../shared/data/chest_xray/val

Seconds on 2 cores: 16 films x 9 scores with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.serving.decode import decode_image_bytes  # noqa: E402
from ml.serving.inference import Predictor  # noqa: E402

RESAMPLERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
LIMIT = 0.05


def copy_224(pixels: np.ndarray, resampler: Image.Resampling, file_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 95} if file_format == "JPEG" else {}
    Image.fromarray(pixels).resize((224, 224), resampler).save(buffer, format=file_format, **options)
    return buffer.getvalue()


def score(predictor: Predictor, data: bytes) -> float:
    """The film's probability; a film the input gate refuses has none, which this check cannot use."""
    result = predictor.predict_bytes(data)
    if not isinstance(result, float):
        raise ValueError(f"the input gate refused the film: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", default="ml/default_model")
    parser.add_argument("--films", required=True, help="folder searched recursively for .jpeg/.jpg/.png files")
    args = parser.parse_args()

    predictor = Predictor.from_artifact(args.artifact)
    films = sorted(p for p in Path(args.films).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not films:
        raise SystemExit(f"No films under {args.films}")
    kinds = [(fmt, name) for fmt in ("PNG", "JPEG") for name in RESAMPLERS]
    rows = []
    for film in films:
        data = film.read_bytes()
        pixels = decode_image_bytes(data).pixels
        full = score(predictor, data)
        copies = [score(predictor, copy_224(pixels, RESAMPLERS[name], fmt)) for fmt, name in kinds]
        rows.append((film, full, copies))

    threshold = predictor.threshold
    print(f"{predictor.name} {predictor.version}: {len(films)} films, threshold {threshold:.3f}")
    print("copy               max |diff|  films over 0.05  label changes")
    for k, (fmt, name) in enumerate(kinds):
        diffs = [abs(copies[k] - full) for _, full, copies in rows]
        flips = sum((copies[k] >= threshold) != (full >= threshold) for _, full, copies in rows)
        over = sum(d > LIMIT for d in diffs)
        print(f"{name:>8} {fmt:<4}        {max(diffs):.3f}        {over:>2} of {len(rows)}        {flips}")
    print("\nfilm, full size, then " + ", ".join(f"{name} {fmt}" for fmt, name in kinds))
    for film, full, copies in rows:
        mark = " *" if max(abs(c - full) for c in copies) > LIMIT else ""
        print(f"{film.parent.name}/{film.name}: {full:.3f} | " + " ".join(f"{c:.3f}" for c in copies) + mark)


if __name__ == "__main__":
    main()
