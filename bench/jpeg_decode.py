"""JPEG decoding throughput of one data-loader worker for ImageNet-style folders (images/s per process).

Usage: python bench/jpeg_decode.py [--images 200] [--size 500x375] [--quality 90]

Writes synthetic photo-like JPEGs (a smooth random colour field plus pixel noise, ImageNet's typical 500×375 size) to
memory, then times what a training worker does per image with Pillow: decode, RandomResizedCrop-style crop of a
random area (8–100 %) resized to 224×224, random horizontal flip, conversion to a float CHW array. Prints the
mean file size and images/s of one process, by wall clock and per CPU-second (the figure to multiply by
``--workers`` on an idle machine).
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
from PIL import Image


def synthetic_jpegs(count: int, width: int, height: int, quality: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def train_transform(data: bytes, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    area = w * h * rng.uniform(0.08, 1.0)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int(round((area * ratio) ** 0.5))), min(h, int(round((area / ratio) ** 0.5)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", default="500x375")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    files = synthetic_jpegs(args.images, width, height, args.quality)
    rng = np.random.default_rng(1)
    train_transform(files[0], rng)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    for data in files:
        train_transform(data, rng)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"# Pillow {Image.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.images} JPEGs "
          f"{width}x{height} q{args.quality}, mean {np.mean([len(f) for f in files]) / 1024:.0f} KiB")
    print(f"decode + random-resized-crop 224 + flip + to float: {args.images / elapsed:.0f} images/s per worker "
          f"({1000 * elapsed / args.images:.2f} ms per image, wall); {args.images / cpu:.0f} images per CPU-second "
          f"(what one uncontended core gives)")


if __name__ == "__main__":
    main()
