"""CPU cost of a classifier training step: forward, backward and AdamW step per batch, one thread,
measured with `time.process_time` (CPU seconds of this process, so other jobs on the machine do not
enter), and what a plan of arms x seeds x epochs costs at that rate. The plan's estimate counts
training steps only (validation and test passes add a forward pass over those splits each epoch).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/classifier_step_cost.py --resolution 64 \
        --archs simple_cnn tf_efficientnetv2_b0 --images 4088 --epochs 12 --runs 15
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ganaug.classify.models import create_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--archs", nargs="+", default=["simple_cnn", "resnet18", "tf_efficientnetv2_b0"])
    parser.add_argument("--images", type=int, default=0, help="training images per epoch of the plan (0: no plan)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per training run of the plan")
    parser.add_argument("--runs", type=int, default=1, help="training runs of the plan (arms x seeds x folds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 1, args.resolution, args.resolution)
    labels = torch.randint(0, args.classes, (args.batch,))
    plan = f" | plan: {args.runs} runs x {args.epochs} epochs x {args.images} images, CPU-hours" if args.images else ""
    print(f"| arch | params | fwd+bwd+step ms (batch {args.batch}) | images / CPU-s{plan} |")
    print("|---|---|---|---|" + ("---|" if args.images else ""))
    for arch in args.archs:
        model = create_classifier(arch, args.classes, 1)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

        step()  # warm-up (allocations, one-time kernel choices)
        start = time.process_time()
        for _ in range(args.repeats):
            step()
        ms = (time.process_time() - start) / args.repeats * 1000
        rate = args.batch / (ms / 1000)
        n_params = sum(p.numel() for p in model.parameters())
        row = f"| {arch} | {n_params / 1e6:.2f} M | {ms:.0f} | {rate:.0f} |"
        if args.images:
            row += f" {args.runs * args.epochs * args.images / rate / 3600:.1f} |"
        print(row)


if __name__ == "__main__":
    main()
