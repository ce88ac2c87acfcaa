"""ganaug's GAN training loop side by side with the pytorch/examples DCGAN (the peer), on this machine.

The peer is `../shared/peers/pytorch-examples-dcgan/main.py`, run from there, unchanged, on its
`--dataset fake` (1000 random RGB images per epoch, made on the fly), `--workers 0`. ganaug runs
`ganaug.gan.train.training_loop` on 1000 random uint8 RGB images held in memory (its data path:
a packed data set) with the `gan` defaults of params.yaml except what fixes the same work:
64 px, 3 channels, `base_channels` 64 (= the peer's ngf = ndf), `batch_size` 64, latent 100,
Adam 2e-4 / 0.5 (those are already the defaults), and no quality evaluation.

Each side runs as its own process for 1 and for 3 epochs, interleaved (peer 1, ganaug 1,
peer 3, ganaug 3, per round), so that start-up (imports, network building) cancels in
    per-epoch time = (time of 3 epochs - time of 1 epoch) / 2.
Both the wall time and the CPU time (user + system of the child process) are measured: on a
machine shared with other jobs the wall time swings with their load, the CPU time of a
one-thread run much less (run with OMP_NUM_THREADS=1 for that reason). Images/s = images
through D per epoch (peer: 1000, its last batch ragged; ganaug: 960, it drops the ragged
batch) / per-epoch time.

`--quick` (for a loaded machine) replaces the 1-epoch run by a 1-step run (the peer's
`--dry-run`, ganaug on one batch of 64 images) and the 3-epoch run by a 1-epoch run:
images/s = (images of the epoch - 64) / (time of the epoch - time of the step), i.e. 936
images over the peer's 15 other batches, 896 over ganaug's 14.

`--variant peer-work` runs ganaug at the peer's exact networks and loss instead of its
defaults: BatchNorm in D (`spectral_norm` false), BCE (`loss` nonsaturating), no DiffAugment,
no EMA. The default variant is ganaug's own recipe (hinge loss, spectral norm in D without
BatchNorm, DiffAugment translation/cutout/color, EMA of G), which does more work per step
than the peer; see BENCHMARKS.md, "ganaug against the pytorch/examples DCGAN".

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peer_dcgan.py --rounds 3

`--profile N` instead profiles N steps of ganaug's loop in this process (torch.profiler, one
thread) and prints the operators by self CPU time: where an epoch's time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "pytorch-examples-dcgan" / "main.py"
N_IMAGES, RESOLUTION, CHANNELS, BATCH, WIDTH = 1000, 64, 3, 64, 64  # the peer's --dataset fake at its defaults
VARIANTS = {
    "defaults": {},  # ganaug's recipe: hinge, spectral norm, DiffAugment, EMA
    "peer-work": {"spectral_norm": False, "loss": "nonsaturating", "augment": "none", "ema_kimg": 0.0},
}


def ganaug_config(epochs: int, variant: str):
    """params.yaml's `gan` defaults with the peer's work: base_channels 64, batch 64."""
    from ganaug.config import GANConfig

    cfg = GANConfig(base_channels=WIDTH, batch_size=BATCH, epochs=epochs, **VARIANTS[variant])
    assert (cfg.latent_dim, cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.optimizer) == (100, 2e-4, 2e-4, 0.5, "adam"), cfg
    return cfg


def run_ganaug(epochs: int, variant: str, workdir: Path, n_images: int = N_IMAGES) -> None:
    """The child process: `epochs` epochs of ganaug's loop on `n_images` random (3, 64, 64) uint8 images."""
    import numpy as np
    import torch

    from ganaug.device import pick_device
    from ganaug.gan.train import training_loop

    cfg = ganaug_config(epochs, variant)
    images = np.random.default_rng(1).integers(0, 256, (n_images, CHANNELS, RESOLUTION, RESOLUTION), dtype=np.uint8)
    training_loop(images, None, 0, cfg, workdir / "gan.pt", pick_device(cfg.device))  # evaluate=None: no quality
    del torch


def profile(steps: int, variant: str) -> None:
    """torch.profiler over `steps` steps of ganaug's loop (one epoch of steps * 64 images), one thread."""
    import torch
    from torch.profiler import ProfilerActivity

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="peer_dcgan_profile_") as tmp:
        started = time.process_time()
        with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
            run_ganaug(1, variant, Path(tmp), steps * BATCH)
        cpu = time.process_time() - started
    print(f"ganaug variant {variant}: {steps} steps of {BATCH} images, {cpu:.1f} s CPU, "
          f"{steps * BATCH / cpu:.1f} images per CPU second (start-up and checkpoint included)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a child process; its output is discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def peer_command(epochs: int, out: Path, one_step: bool = False) -> list[str]:
    return [sys.executable, PEER.name, "--dataset", "fake", "--imageSize", str(RESOLUTION), "--batchSize", str(BATCH),
            "--ngf", str(WIDTH), "--ndf", str(WIDTH), "--nz", "100", "--lr", "0.0002", "--beta1", "0.5",
            "--niter", str(epochs), "--workers", "0", "--outf", str(out), "--manualSeed", "1", *(["--dry-run"] if one_step else [])]


def ganaug_command(epochs: int, variant: str, out: Path, n_images: int = N_IMAGES) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child-epochs", str(epochs), "--variant", variant,
            "--workdir", str(out), "--child-images", str(n_images)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each: both sides at 1 and 3 epochs)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="defaults", help="ganaug's options (see above)")
    parser.add_argument("--quick", action="store_true", help="1 step against 1 epoch instead of 1 against 3 epochs")
    parser.add_argument("--profile", type=int, metavar="STEPS", help="profile STEPS steps of ganaug's loop and exit")
    parser.add_argument("--child-epochs", type=int, help=argparse.SUPPRESS)  # internal: run ganaug's side
    parser.add_argument("--child-images", type=int, default=N_IMAGES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_epochs is not None:
        run_ganaug(args.child_epochs, args.variant, args.workdir, args.child_images)
        return
    if args.profile:
        profile(args.profile, args.variant)
        return
    if not PEER.is_file():
        sys.exit(f"peer not found: {PEER} (see ../shared/peers/README.md)")

    env_threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"ganaug variant {args.variant} {VARIANTS[args.variant] or '(params.yaml gan defaults)'}, base_channels {WIDTH}, "
          f"batch {BATCH}, {N_IMAGES} images {CHANNELS}x{RESOLUTION}x{RESOLUTION}; OMP_NUM_THREADS={env_threads}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    epoch_images = {"peer": N_IMAGES, "ganaug": (N_IMAGES // BATCH) * BATCH}  # the peer keeps the ragged batch
    if args.quick:  # (short, long) runs: the peer's --dry-run / ganaug on one batch, then one epoch
        runs = {"peer": (lambda out: peer_command(1, out, one_step=True), lambda out: peer_command(1, out)),
                "ganaug": (lambda out: ganaug_command(1, args.variant, out, BATCH),
                           lambda out: ganaug_command(1, args.variant, out))}
        work = {side: n - BATCH for side, n in epoch_images.items()}  # images between the two runs
    else:
        runs = {"peer": (lambda out: peer_command(1, out), lambda out: peer_command(3, out)),
                "ganaug": (lambda out: ganaug_command(1, args.variant, out), lambda out: ganaug_command(3, args.variant, out))}
        work = {side: 2 * n for side, n in epoch_images.items()}
    cwd = {"peer": PEER.parent, "ganaug": ROOT}
    labels = ("1 step", "1 epoch") if args.quick else ("1 epoch", "3 epochs")
    rates: dict[str, list[tuple[float, float]]] = {"peer": [], "ganaug": []}  # (wall, CPU) images/s per round
    with tempfile.TemporaryDirectory(prefix="peer_dcgan_") as tmp:
        for r in range(args.rounds):
            times: dict[tuple[str, int], tuple[float, float]] = {}
            for k in (0, 1):  # interleaved: peer short, ganaug short, peer long, ganaug long
                for side in ("peer", "ganaug"):
                    times[side, k] = timed(runs[side][k](Path(tmp) / f"r{r}_{k}_{side}"), cwd[side])
            for side in rates:
                (w1, c1), (w2, c2) = times[side, 0], times[side, 1]
                rates[side].append((work[side] / (w2 - w1), work[side] / (c2 - c1)))
                extra = f" | per epoch {(w2 - w1) / 2:6.1f} s wall {(c2 - c1) / 2:6.1f} s CPU" if not args.quick else ""
                print(f"round {r + 1} {side:6s}: {labels[0]} {w1:7.1f} s wall {c1:7.1f} s CPU | {labels[1]} {w2:7.1f} s wall "
                      f"{c2:7.1f} s CPU{extra}", flush=True)
            print(f"round {r + 1} load average {os.getloadavg()[0]:.1f}", flush=True)

    print("\n| side | images between the runs | images/s (wall) median [min, max] | images/s (CPU time) median [min, max] |")
    print("|---|---|---|---|")
    for side, values in rates.items():
        wall, cpu = [w for w, _ in values], [c for _, c in values]
        print(f"| {side} | {work[side]} | {statistics.median(wall):.1f} [{min(wall):.1f}, {max(wall):.1f}] | "
              f"{statistics.median(cpu):.1f} [{min(cpu):.1f}, {max(cpu):.1f}] |")
    for k, name in ((0, "wall"), (1, "CPU")):
        ratios = [g[k] / p[k] for g, p in zip(rates["ganaug"], rates["peer"], strict=True)]
        print(f"ratio ganaug / peer ({name} time), per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"median {statistics.median(ratios):.2f}")

if __name__ == "__main__":
    main()
