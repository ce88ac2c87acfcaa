"""Classic augmentation throughput: `ClassicAugment` (per-image parameters, batched) against the
same torchvision v2 operations called image by image. Images per CPU-second (process time), so
that other jobs on the machine do not enter; one thread.

    OMP_NUM_THREADS=1 python benchmarks/augment_throughput.py
"""

from __future__ import annotations

import time

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ganaug.classify.augment import ClassicAugment
from ganaug.config import ClassicAugmentConfig


def per_cpu_second(fn, n_images: int) -> float:
    started = time.process_time()
    fn()
    return n_images / (time.process_time() - started)


def main() -> None:
    torch.set_num_threads(1)
    cfg = ClassicAugmentConfig()  # the default arms.classic
    augment, generator = ClassicAugment(cfg), torch.Generator().manual_seed(0)
    print(f"{cfg}\n| size | ClassicAugment (batched, per-image parameters) | v2 functions image by image |\n|---|---|---|")
    for size in (28, 64):
        images = torch.randint(0, 256, (2048, 1, size, size), dtype=torch.uint8, generator=generator)

        def batched():
            for start in range(0, len(images), 64):
                augment(images[start : start + 64], generator)

        def one_by_one():
            for image in images[:256]:
                out = TF.rotate(image, 5.0, interpolation=InterpolationMode.BILINEAR, fill=0)
                out = TF.resized_crop(out, 1, 1, size - 2, size - 2, [size, size],
                                      interpolation=InterpolationMode.BILINEAR, antialias=True)
                TF.adjust_contrast(TF.adjust_brightness(out, 1.05), 0.95)

        print(f"| {size} px | {per_cpu_second(batched, 2048):.0f} | {per_cpu_second(one_by_one, 256):.0f} |")


if __name__ == "__main__":
    main()
