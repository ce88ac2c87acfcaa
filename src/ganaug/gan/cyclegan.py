"""CycleGAN (`gan.arch: cyclegan`): unpaired translation from a source class to a target class
of the train split (Zhu et al. 2017), with its own training loop (`translation_loop`).

- `ResnetGenerator`: c7s1 -> two stride-2 downsamplings -> residual blocks -> two stride-2
  upsamplings -> c7s1 -> tanh, instance norm. Every supported resolution (base * 2**k, k >= 2,
  `ganaug.resolution`) divides by 4, so the bottleneck is at least 7 x 7. Residual blocks by
  resolution unless gan.cyclegan.n_res_blocks says otherwise (`residual_blocks`).
- `PatchDiscriminator`: a PatchGAN, (N, C, R, R) -> a map of patch logits (N, 1, h, w); three
  stride-2 layers from 64 px up (70 x 70 receptive field, as in the paper at 256 px), two below.
- `LeastSquaresLoss`, `cycle_loss`, `identity_loss`: the paper's losses (LSGAN targets 1 / 0).
- `ImagePool`: D sees a mix of this step's fakes and up to pool_size earlier ones, drawn with
  its own seeded `torch.Generator`; its content and RNG state go into the checkpoint.
- `lr_factor`: constant, then linear decay to 0 from gan.cyclegan.decay_start x gan.epochs.

Domain A is the source class, B the target class: G_AB translates A -> B (what synthesize
uses), G_BA translates back for the cycle loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganaug.config import GANConfig, to_dict

INIT_STD = 0.02  # N(0, 0.02) weights, as in the paper's code


def residual_blocks(resolution: int, configured: int) -> int:
    """gan.cyclegan.n_res_blocks, or by resolution when 0: 3 up to 32 px (a 7-8 px bottleneck), 6 up
    to 128 px (the paper's 128 px choice), 9 above (its 256 px choice)."""
    if configured > 0:
        return configured
    return 3 if resolution <= 32 else 6 if resolution <= 128 else 9


def discriminator_layers(resolution: int) -> int:
    """Stride-2 layers of the PatchGAN: 3 from 64 px (70 px patches), 2 below (patches stay > 1 x 1)."""
    return 3 if resolution >= 64 else 2


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """(N, C, R, R) in [-1, 1] -> (N, C, R, R) in [-1, 1]."""

    def __init__(self, resolution: int, base_channels: int, channels: int = 1, n_res_blocks: int = 0):
        super().__init__()
        assert resolution % 4 == 0 and resolution >= 16, f"ResnetGenerator needs a resolution divisible by 4, got {resolution}"
        self.resolution, self.channels = resolution, channels
        self.n_res_blocks = residual_blocks(resolution, n_res_blocks)
        c = base_channels
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, c, 7), nn.InstanceNorm2d(c), nn.ReLU(True)]
        for mult in (1, 2):  # R -> R/2 -> R/4
            layers += [nn.Conv2d(c * mult, c * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(c * mult * 2), nn.ReLU(True)]
        layers += [ResidualBlock(c * 4) for _ in range(self.n_res_blocks)]
        for mult in (4, 2):  # R/4 -> R/2 -> R
            layers += [nn.ConvTranspose2d(c * mult, c * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(c * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert x.shape[1:] == (self.channels, self.resolution, self.resolution), \
            f"translator input must be (N, {self.channels}, {self.resolution}, {self.resolution}), got {tuple(x.shape)}"
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """(N, C, R, R) -> patch logits (N, 1, h, w): one real/fake verdict per receptive field."""

    def __init__(self, resolution: int, base_channels: int, channels: int = 1):
        super().__init__()
        self.resolution, self.channels = resolution, channels
        c, n_layers = base_channels, discriminator_layers(resolution)
        layers: list[nn.Module] = [nn.Conv2d(channels, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):  # n_layers - 1 more stride-2 layers, then one stride-1 layer
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(c * prev, c * mult, 4, stride=2 if n < n_layers else 1, padding=1),
                       nn.InstanceNorm2d(c * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(c * mult, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            nn.init.zeros_(m.bias)


def build_translator(cfg: GANConfig, resolution: int, channels: int = 1) -> ResnetGenerator:
    return ResnetGenerator(resolution, cfg.base_channels, channels, cfg.cyclegan.n_res_blocks)


class LeastSquaresLoss:
    """LSGAN: D pushes real patches to 1 and fake patches to 0, G pushes its fakes to 1. D's loss
    is halved (the paper's code), so D learns at half G's rate."""

    def discriminator(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        return 0.5 * (((real_out.float() - 1) ** 2).mean() + (fake_out.float() ** 2).mean())

    def generator(self, fake_out: torch.Tensor) -> torch.Tensor:
        return ((fake_out.float() - 1) ** 2).mean()


def cycle_loss(real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """L1 between an image and its round trip (A -> B -> A or B -> A -> B)."""
    return (reconstructed.float() - real.float()).abs().mean()


def identity_loss(real: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """L1 between a target-domain image and G's output for it (G should leave it alone)."""
    return (mapped.float() - real.float()).abs().mean()


def lr_factor(epoch: int, epochs: int, decay_start: float) -> float:
    """Learning-rate multiplier during 1-based `epoch`: 1 up to round(decay_start x epochs), then a
    linear decay that would reach 0 one epoch after the last (every epoch still learns)."""
    start = int(round(decay_start * epochs))
    if epoch <= start:
        return 1.0
    return 1.0 - (epoch - start) / (epochs - start + 1)


class ImagePool:
    """A buffer of up to `size` earlier fakes (the paper's 50; 0 = off). Each query image is
    returned as is while the pool fills; afterwards, with probability 1/2, a random stored image
    is returned in its place and the new one stored instead (Shrivastava et al. 2017)."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []  # each (C, R, R), detached, on CPU
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) this step's fakes -> (B, C, R, R) what D sees, on the fakes' device."""
        if self.size == 0:
            return fakes.detach()
        out = []
        for image in fakes.detach():
            cpu = image.cpu()
            if len(self.images) < self.size:
                self.images.append(cpu)
                out.append(cpu)
            elif torch.rand((), generator=self.rng).item() < 0.5:
                i = int(torch.randint(len(self.images), (), generator=self.rng))
                out.append(self.images[i])
                self.images[i] = cpu
            else:
                out.append(cpu)
        return torch.stack(out).to(fakes.device, fakes.dtype)

    def state_dict(self) -> dict[str, Any]:
        stored = torch.stack(self.images) if self.images else torch.zeros(0)
        return {"size": self.size, "images": stored, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert state["size"] == self.size, f"image pool of size {state['size']} loaded into one of size {self.size}"
        self.images = list(state["images"].unbind(0)) if state["images"].numel() else []
        self.rng.set_state(state["rng"])


def translation_classes(class_names: list[str], train_counts: list[int], cfg: GANConfig) -> tuple[int, int]:
    """(source, target) class indices from gan.cyclegan.source_class / target_class (class names;
    null = the largest / smallest class of the train split). A name the data set lacks, the same
    class twice, or a class without training images raises ValueError naming the key."""
    cc = cfg.cyclegan
    chosen = {}
    for key, name, default in (("source_class", cc.source_class, int(np.argmax(train_counts))),
                                ("target_class", cc.target_class, int(np.argmin(train_counts)))):
        if name is None:
            chosen[key] = default
        elif name not in class_names:
            raise ValueError(f"gan.cyclegan.{key}={name!r}: not a class of the prepared data set; expected one of {class_names}")
        else:
            chosen[key] = class_names.index(name)
        if train_counts[chosen[key]] == 0:
            raise ValueError(f"gan.cyclegan.{key}: class {class_names[chosen[key]]!r} has no training images")
    source, target = chosen["source_class"], chosen["target_class"]
    if source == target:
        raise ValueError(
            f"gan.cyclegan.source_class and gan.cyclegan.target_class both resolve to {class_names[source]!r} "
            f"(train counts {dict(zip(class_names, train_counts))}; null = largest / smallest class): expected two classes"
        )
    return source, target


@torch.no_grad()
def translate(network: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, C, R, R) uint8 source images -> (N, C, R, R) uint8 translations (network in eval mode)."""
    from ganaug.gan.train import to_model_range, to_uint8  # train imports this module

    assert images.ndim == 4 and images.dtype == np.uint8, f"images must be (N, C, H, W) uint8, got {images.shape} {images.dtype}"
    device = next(network.parameters()).device
    out = [to_uint8(network(to_model_range(torch.from_numpy(images[i:i + batch_size])).to(device))).cpu().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros_like(images)


def source_order(n_source: int, seed: int) -> np.ndarray:
    """The seeded order in which synthesize takes source images: a permutation of range(n_source)."""
    return np.random.default_rng(seed).permutation(n_source)


def source_indices(n_source: int, n: int, seed: int) -> np.ndarray:
    """Which source image each of the first `n` translations comes from (N,): the seeded order,
    repeated when more translations than source images are asked for; a prefix of a longer request."""
    return source_order(n_source, seed)[np.arange(n) % n_source]


# --- training -------------------------------------------------------------------------------

CHECKPOINT_FIELDS = {
    "config": dict, "epoch": int, "step": int, "g_ab": dict, "g_ba": dict, "d_a": dict, "d_b": dict,
    "opt_g": dict, "opt_d": dict, "pool_a": dict, "pool_b": dict, "order_rng": torch.Tensor, "torch_rng": torch.Tensor,
    "losses": list, "quality": list,
}


@dataclass
class Translators:
    g_ab: ResnetGenerator  # source -> target (what synthesize uses)
    g_ba: ResnetGenerator  # target -> source (the cycle)
    d_a: PatchDiscriminator  # real vs translated source-class images
    d_b: PatchDiscriminator  # real vs translated target-class images

    def modules(self) -> dict[str, nn.Module]:
        return {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}


def build_translators(cfg: GANConfig, resolution: int, channels: int) -> Translators:
    """Both generators, then both discriminators (the order fixes the initial weights for a seed)."""
    g_ab, g_ba = build_translator(cfg, resolution, channels), build_translator(cfg, resolution, channels)
    d_a = PatchDiscriminator(resolution, cfg.base_channels, channels)
    return Translators(g_ab, g_ba, d_a, PatchDiscriminator(resolution, cfg.base_channels, channels))


def load_translation_checkpoint(path: Path) -> dict[str, Any] | None:
    from ganaug.torchfile import load_torch_file, require_fields

    if not path.is_file():
        return None
    expected = "a CycleGAN checkpoint written by the train_gan stage; remove it to train from scratch"
    return require_fields(load_torch_file(path, "CycleGAN checkpoint", expected), path, "CycleGAN checkpoint", expected,
                          CHECKPOINT_FIELDS)


def translation_step(nets: Translators, real_a: torch.Tensor, real_b: torch.Tensor, opt_g: torch.optim.Optimizer,
                     opt_d: torch.optim.Optimizer, pool_a: ImagePool, pool_b: ImagePool, cfg: GANConfig) -> dict[str, torch.Tensor]:
    """One CycleGAN step on (B, C, R, R) batches in [-1, 1] of each domain; returns 0-d loss tensors."""
    cc, gan_loss = cfg.cyclegan, LeastSquaresLoss()
    fake_b, fake_a = nets.g_ab(real_a), nets.g_ba(real_b)  # translations
    rec_a, rec_b = nets.g_ba(fake_b), nets.g_ab(fake_a)  # round trips

    # (1) Update G_AB and G_BA: fool both Ds, come back on the cycle, leave target images alone
    for d in (nets.d_a, nets.d_b):
        d.requires_grad_(False)  # no D gradients from G's step
    adversarial_g = gan_loss.generator(nets.d_b(fake_b)) + gan_loss.generator(nets.d_a(fake_a))
    cycle = cc.lambda_cycle * (cycle_loss(real_a, rec_a) + cycle_loss(real_b, rec_b))
    identity = torch.zeros((), device=real_a.device)
    if cc.lambda_identity > 0:  # weighted relative to the cycle weight, as in the paper's code
        identity = cc.lambda_cycle * cc.lambda_identity * (identity_loss(real_b, nets.g_ab(real_b)) +
                                                             identity_loss(real_a, nets.g_ba(real_a)))
    loss_g = adversarial_g + cycle + identity
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    for d in (nets.d_a, nets.d_b):
        d.requires_grad_(True)

    # (2) Update D_A and D_B: real images against fakes drawn from the pools of past fakes
    real_out_b, fake_out_b = nets.d_b(real_b), nets.d_b(pool_b.query(fake_b))
    loss_d_b = gan_loss.discriminator(real_out_b, fake_out_b)
    loss_d_a = gan_loss.discriminator(nets.d_a(real_a), nets.d_a(pool_a.query(fake_a)))
    loss_d = loss_d_a + loss_d_b
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_d_a": loss_d_a.detach(), "loss_d_b": loss_d_b.detach(),
            "loss_g_adv": adversarial_g.detach(), "loss_cycle": cycle.detach(), "loss_identity": identity.detach(),
            "d_real": real_out_b.detach().float().mean(), "d_fake": fake_out_b.detach().float().mean()}  # D_B's outputs (LSGAN: ~1 / ~0)


def translation_loop(
    source_images: np.ndarray,  # (N_A, C, R, R) uint8: real train images of gan.cyclegan.source_class
    target_images: np.ndarray,  # (N_B, C, R, R) uint8: real train images of gan.cyclegan.target_class
    cfg: GANConfig,  # gan section: base_channels, epochs, batch_size, lr_g, lr_d, beta1/2, seed, cyclegan block
    checkpoint_path: Path,  # resumable state, rewritten atomically after every epoch
    device: torch.device,
    evaluate: Callable[[int, nn.Module], dict[str, float]] | None = None,  # (epoch, G_AB) -> metrics
    on_epoch_end: Callable[[Any], None] | None = None,  # logging hook, given a gan.train.EpochReport
    extra_state: dict[str, Any] | None = None,  # saved with the checkpoint (e.g. MLflow run id)
    stop_after_epoch: int | None = None,  # return early after this epoch (simulates a killed run)
) -> Any:
    """Train G_AB, G_BA, D_A, D_B; resume from `checkpoint_path` when it exists. Returns a
    `gan.train.GANTrainResult` whose generator is G_AB (eval mode) and discriminator D_B."""
    from ganaug.gan.records import to_floats
    from ganaug.gan.train import EpochReport, GANDivergenceError, GANTrainResult, to_model_range
    from ganaug.io import kill_point
    from ganaug.progress import progress
    from ganaug.torchfile import save_torch_file

    for name, images in (("source", source_images), ("target", target_images)):
        assert images.ndim == 4 and images.dtype == np.uint8, f"{name} images must be (N, C, H, W) uint8, got {images.shape}"
    assert source_images.shape[1:] == target_images.shape[1:], "source and target images must have one shape"
    channels, resolution = source_images.shape[1], source_images.shape[-1]
    n_a, n_b = len(source_images), len(target_images)
    batch_size = min(cfg.batch_size, n_a, n_b)
    if batch_size < 1:
        raise ValueError(f"CycleGAN training needs images of both classes, got {n_a} source and {n_b} target images")
    steps_per_epoch = max(n_a, n_b) // batch_size  # an epoch: one pass over the larger class
    images_per_step = 2 * batch_size

    torch.manual_seed(cfg.seed)
    nets = build_translators(cfg, resolution, channels)
    for m in nets.modules().values():
        m.to(device)
    opt_g = torch.optim.Adam([*nets.g_ab.parameters(), *nets.g_ba.parameters()], lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam([*nets.d_a.parameters(), *nets.d_b.parameters()], lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    pool_a, pool_b = ImagePool(cfg.cyclegan.pool_size, cfg.seed + 3), ImagePool(cfg.cyclegan.pool_size, cfg.seed + 4)
    order_rng = torch.Generator().manual_seed(cfg.seed)  # data order of both domains
    losses: list[dict[str, float]] = []
    quality: list[dict[str, float]] = []
    start_epoch, step, train_seconds, images_seen = 0, 0, 0.0, 0
    extra = dict(extra_state or {})

    state = load_translation_checkpoint(checkpoint_path)
    if state is not None:
        if state["config"] != to_dict(cfg):
            raise ValueError(f"checkpoint {checkpoint_path} was written with another gan config; remove it to start over")
        for name, module in nets.modules().items():
            module.load_state_dict(state[name])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        pool_a.load_state_dict(state["pool_a"])
        pool_b.load_state_dict(state["pool_b"])
        order_rng.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        losses, quality = state["losses"], state["quality"]
        start_epoch, step = state["epoch"], state["step"]
        train_seconds, images_seen = state.get("train_seconds", 0.0), state.get("images_seen", 0)
        extra = {**state.get("extra", {}), **extra}
    resumed_from = start_epoch
    x_a, x_b = torch.from_numpy(source_images), torch.from_numpy(target_images)  # uint8 on CPU

    def save_checkpoint(epoch: int) -> None:  # tensors and plain values only: it loads with weights_only=True
        save_torch_file({
            "config": to_dict(cfg), "epoch": epoch, "step": step,
            **{name: module.state_dict() for name, module in nets.modules().items()},
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "pool_a": pool_a.state_dict(), "pool_b": pool_b.state_dict(),
            "order_rng": order_rng.get_state(), "torch_rng": torch.get_rng_state(),
            "losses": losses, "quality": quality, "train_seconds": train_seconds, "images_seen": images_seen,
            "resolution": resolution, "channels": channels, "extra": extra,
        }, checkpoint_path)

    epoch_bar = progress(range(start_epoch + 1, cfg.epochs + 1), desc="CycleGAN", total=cfg.epochs, initial=start_epoch,
                         unit="epoch", log_every_s=0)
    for epoch in epoch_bar:
        factor = lr_factor(epoch, cfg.epochs, cfg.cyclegan.decay_start)
        for opt, base in ((opt_g, cfg.lr_g), (opt_d, cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        for m in nets.modules().values():
            m.train()
        # each domain in its own random order, the smaller one repeated to the larger one's length
        order_a = torch.cat([torch.randperm(n_a, generator=order_rng) for _ in range(-(-max(n_a, n_b) // n_a))])
        order_b = torch.cat([torch.randperm(n_b, generator=order_rng) for _ in range(-(-max(n_a, n_b) // n_b))])
        epoch_losses: list[dict[str, float]] = []
        epoch_start = time.perf_counter()
        step_bar = progress(range(steps_per_epoch), desc=f"CycleGAN epoch {epoch}/{cfg.epochs}", unit="step")
        for i in step_bar:
            batch = slice(i * batch_size, (i + 1) * batch_size)
            real_a = to_model_range(x_a[order_a[batch]]).to(device)  # (B, C, R, R) in [-1, 1]
            real_b = to_model_range(x_b[order_b[batch]]).to(device)
            terms = translation_step(nets, real_a, real_b, opt_g, opt_d, pool_a, pool_b, cfg)
            step += 1
            record = {"step": step, "epoch": epoch, **to_floats(terms), "lr_factor": factor}
            for name in ("loss_d", "loss_g"):
                if not math.isfinite(record[name]):
                    last = f"{checkpoint_path} (epoch {epoch - 1})" if epoch > 1 else "none (failed in the first epoch)"
                    raise GANDivergenceError(f"CycleGAN diverged: {name} = {record[name]} at epoch {epoch}, step {step}; "
                                             f"last good checkpoint: {last}. Try a lower gan.lr_d / gan.lr_g.")
            epoch_losses.append(record)
            step_bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}",
                                 cycle=f"{record['loss_cycle']:.3f}", refresh=False)
        step_bar.close()
        losses.extend(epoch_losses)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        images_seen += steps_per_epoch * images_per_step

        metrics = None
        if evaluate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            nets.g_ab.eval()
            with torch.no_grad():
                metrics = evaluate(epoch, nets.g_ab)
            quality.append({"epoch": epoch, **metrics})
        save_checkpoint(epoch)
        kill_point(f"gan_checkpoint_saved:{epoch}")
        if on_epoch_end is not None:
            on_epoch_end(EpochReport(epoch, step, epoch_losses, epoch_seconds, steps_per_epoch * images_per_step, metrics, nets.g_ab))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    epoch_bar.close()
    nets.g_ab.eval()
    return GANTrainResult(nets.g_ab, nets.d_b, losses, quality, resumed_from, extra, nets.g_ab, None, train_seconds, images_seen)
