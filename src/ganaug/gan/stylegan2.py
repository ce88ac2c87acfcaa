"""StyleGAN2 (Karras et al. 2020) with class conditioning, in plain PyTorch (no custom CUDA op).

G: a mapping network z (+ a label embedding, as StyleGAN2-ADA's conditional models) -> w, and a
synthesis network from a learned constant at base x base, doubled k times by blocks of two
modulated 3x3 convolutions (weights scaled per sample by a style from w, then demodulated to
unit output variance), per-pixel noise inputs and a skip output: every block adds its 1x1
"to image" output to the upsampled image so far. Modulation is done on the activations
(x * style, conv, x * demodulation), the non-fused form of StyleGAN2-ADA's `modulated_conv2d`:
the same arithmetic as the grouped convolution, with one ordinary conv per layer.

- Training mode: fresh noise maps, style mixing (with probability `style_mixing` a second z's w
  drives the layers from a random cutoff on) and a linear output, as in the paper; the mean w
  of each class is tracked (`w_avg`, decay 0.995) for truncation.
- Eval mode (what is sampled and saved): constant noise maps (a buffer), no mixing, output
  clamped to [-1, 1] (the data contract), so a synthetic set is a pure function of z.
- Truncation: w = w_avg[class] + psi * (w - w_avg[class]); psi = 1 leaves w, psi = 0 gives the
  class's mean-w image for every z. Multi-hot labels have no class mean: psi < 1 raises there.

D: residual blocks (two 3x3 convs and a 1x1 skip, average-pool down, summed / sqrt 2), then
minibatch standard deviation at base x base, a conv and two linear layers; the class enters by
projection (logit += <embed(y), features> / sqrt(C)). It is built from nn.Conv2d / nn.Linear, so
`gan.spectral_norm` applies to it; it has no normalisation layers, whatever `norm` says
(minibatch std needs no batch statistics; lazy R1 is per-sample).

Widths follow `feature_channels(base_channels, level)` (the DCGAN widths: base_channels at the
image, doubling towards base x base, capped at 512), so `gan.base_channels` sizes it as for
the other archs; the mapping net's depth and w's size come from `gan.stylegan2`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganaug.gan.blocks import apply_spectral_norm, feature_channels, label_vectors, resolution_plan
from ganaug.gan.losses import ADVERSARIAL_LOSSES, GANLoss

ACTIVATION_GAIN = math.sqrt(2.0)  # leaky ReLU 0.2 followed by sqrt(2) keeps unit variance (equalised lr)
W_AVG_DECAY = 0.995  # the tracked mean of w (StyleGAN2's w_avg_beta)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * ACTIVATION_GAIN


def _upsample(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), bilinear (a [1, 3, 3, 1] FIR filter in each direction)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights drawn N(0, 1) / lr_multiplier and scaled
    by lr_multiplier / sqrt(fan_in) at run time (the mapping net uses lr_multiplier 0.01)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.lr_multiplier, self.activate = lr_multiplier, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)
        return _lrelu(x) if self.activate else x


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (N, z_dim) [+ label vectors (N, K)] -> w (N, w_dim); tracks the mean w per class."""

    def __init__(self, z_dim: int, w_dim: int, n_classes: int, n_layers: int, lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim, self.n_classes = z_dim, w_dim, n_classes
        self.embed = EqualLinear(n_classes, w_dim) if n_classes else None
        in_features = z_dim + (w_dim if n_classes else 0)
        self.layers = nn.ModuleList(
            EqualLinear(in_features if i == 0 else w_dim, w_dim, lr_multiplier=lr_multiplier, activate=True)
            for i in range(n_layers)
        )
        self.register_buffer("w_avg", torch.zeros(max(n_classes, 1), w_dim))  # (K or 1, w_dim)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = _normalize_2nd_moment(z.float())
        if self.embed is not None:
            assert y is not None, "the conditional StyleGAN2 mapping network needs label vectors"
            x = torch.cat([x, _normalize_2nd_moment(self.embed(y.float()))], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x  # (N, w_dim)

    @torch.no_grad()
    def track(self, w: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Move each class's w_avg row towards the batch mean of its w (class indices or unconditional)."""
        if labels is None or self.n_classes == 0:
            self.w_avg[0].lerp_(w.detach().float().mean(0), 1 - W_AVG_DECAY)
            return
        if labels.ndim != 1:
            return  # multi-hot vectors have no class mean to track
        onehot = F.one_hot(labels, self.n_classes).float()  # (N, K)
        counts = onehot.sum(0)  # (K,)
        means = (onehot.T @ w.detach().float()) / counts.clamp(min=1)[:, None]  # (K, w_dim)
        seen = counts > 0
        self.w_avg[seen] = self.w_avg[seen].lerp(means[seen], 1 - W_AVG_DECAY)

    def center(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """The mean w the truncation pulls towards: (n, w_dim)."""
        if labels is None or self.n_classes == 0:
            return self.w_avg[0].expand(n, -1)
        if labels.ndim != 1:
            raise ValueError("truncation (synthesize.truncation_psi < 1) needs class-index labels: a multi-hot "
                             "StyleGAN2 generator has no mean w per label vector; use synthesize.truncation_psi=1.0")
        return self.w_avg[labels]


class ModulatedConv2d(nn.Module):
    """x (N, I, H, W), w (N, w_dim) -> (N, O, H', W'): conv whose weights are scaled per sample by
    style = affine(w) (N, I) and, with `demodulate`, renormalised to unit output variance."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, demodulate: bool = True,
                 up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.demodulate, self.up, self.padding = demodulate, up, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (N, I)
        weight = self.weight * self.weight_gain  # (O, I, k, k)
        x = x * styles.to(x.dtype)[:, :, None, None]
        if self.up:
            x = _upsample(x)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:  # sigma_j = sqrt(sum_{i,k} (w_ijk * s_i)^2): (O, I) @ (I, N) -> (N, O)
            dcoefs = (weight.square().sum(dim=(2, 3)) @ styles.square().T + 1e-8).rsqrt().T
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv -> + noise * strength -> + bias -> leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))  # eval-mode noise

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w)
        if self.training:  # fresh noise (N, 1, H, W) from the device's generator (CPU: saved with the checkpoint)
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        return _lrelu(x + noise * self.noise_strength.to(x.dtype) + self.bias.to(x.dtype)[None, :, None, None])


class ToImage(nn.Module):
    """Modulated 1x1 conv to the image channels, no demodulation, no activation (the skip output)."""

    def __init__(self, in_channels: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]


class Generator(nn.Module):
    """z (N, latent_dim) [+ labels (N,) or (N, K)] -> images (N, channels, R, R)
    (clamped to [-1, 1] in eval mode; linear while training)."""

    def __init__(self, resolution: int, latent_dim: int = 100, base_channels: int = 32, n_classes: int = 0,
                 channels: int = 1, mapping_layers: int = 2, w_dim: int = 128, style_mixing: float = 0.9):
        super().__init__()
        base, k = resolution_plan(resolution)
        self.resolution, self.latent_dim, self.n_classes, self.channels = resolution, latent_dim, n_classes, channels
        self.style_mixing = style_mixing
        self.mapping = MappingNetwork(latent_dim, w_dim, n_classes, mapping_layers)
        ch = feature_channels(base_channels, k)
        self.const = nn.Parameter(torch.randn(ch, base, base))
        self.first = SynthesisLayer(ch, ch, w_dim, base)
        self.first_image = ToImage(ch, channels, w_dim)
        self.blocks = nn.ModuleList()  # block j: (N, ch, r, r) -> (N, out, 2r, 2r), two layers and a skip output
        for j, level in enumerate(range(k - 1, -1, -1), start=1):
            out, size = feature_channels(base_channels, level), base * 2**j
            self.blocks.append(nn.ModuleDict({
                "conv0": SynthesisLayer(ch, out, w_dim, size, up=True),
                "conv1": SynthesisLayer(out, out, w_dim, size),
                "to_image": ToImage(out, channels, w_dim),
            }))
            ch = out
        self.num_ws = 2 + 2 * k  # first layer, its image, then (conv0, conv1) per block; to_image shares the next w

    def mapping_ws(self, z: torch.Tensor, labels: torch.Tensor | None, truncation_psi: float = 1.0) -> torch.Tensor:
        """z -> ws (N, num_ws, w_dim): one w per layer, style-mixed while training, truncated when psi != 1."""
        assert z.ndim == 2 and z.shape[1] == self.latent_dim, f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}"
        y = None
        if self.n_classes:
            assert labels is not None, f"the conditional StyleGAN2 generator needs class labels ({self.n_classes} classes)"
            y = label_vectors(labels, self.n_classes, torch.float32)
        w = self.mapping(z, y)  # (N, w_dim)
        if self.training:
            self.mapping.track(w, labels if self.n_classes else None)
        ws = w[:, None, :].repeat(1, self.num_ws, 1)
        if self.training and self.style_mixing > 0:
            # drawn on the CPU's global generator: the same choices on any device, saved with the checkpoint
            if torch.rand(()) < self.style_mixing:
                cutoff = int(torch.randint(1, self.num_ws, ()))
                w2 = self.mapping(torch.randn(z.shape).to(z.device), y)
                ws = torch.cat([ws[:, :cutoff], w2[:, None, :].expand(-1, self.num_ws - cutoff, -1)], dim=1)
        if truncation_psi != 1.0:
            center = self.mapping.center(labels if self.n_classes else None, len(z))[:, None, :]  # (N, 1, w_dim)
            ws = center + truncation_psi * (ws - center)
        return ws

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> images (N, channels, R, R), linear (before any clamp)."""
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws, f"ws must be (N, {self.num_ws}, w_dim), got {tuple(ws.shape)}"
        x = self.const[None].expand(len(ws), -1, -1, -1)
        x = self.first(x, ws[:, 0])
        image = self.first_image(x, ws[:, 1])
        for j, block in enumerate(self.blocks):
            x = block["conv0"](x, ws[:, 2 * j + 1])
            x = block["conv1"](x, ws[:, 2 * j + 2])
            image = _upsample(image) + block["to_image"](x, ws[:, 2 * j + 3])
        return image

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0) -> torch.Tensor:
        image = self.synthesis(self.mapping_ws(z, labels, truncation_psi))
        return image if self.training else image.clamp(-1.0, 1.0)


class DiscriminatorBlock(nn.Module):
    """(N, C_in, r, r) -> (N, C_out, r/2, r/2): two 3x3 convs + a 1x1 skip, average-pooled, / sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.leaky_relu(self.conv0(x), 0.2)
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.2), 2)
        return (x + skip) / math.sqrt(2.0)


def minibatch_std(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """(N, C, H, W) -> (N, C + 1, H, W): appends the mean standard deviation of each feature over
    groups of up to `group_size` samples (the largest divisor of N not above it), so D sees how
    varied a batch is."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.float().reshape(g, n // g, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N / g,)
    y = y.repeat(g)[:, None, None, None].expand(n, 1, h, w)  # sample i belongs to group i % (N / g)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    """images (N, channels, R, R) [+ labels (N,) or (N, K)] -> real/fake logits (N,)."""

    def __init__(self, resolution: int, base_channels: int = 32, n_classes: int = 0, channels: int = 1,
                 norm: str = "none", spectral_norm: bool = False):
        super().__init__()
        del norm  # no normalisation layers in StyleGAN2's D (module docstring)
        base, k = resolution_plan(resolution)
        self.resolution, self.n_classes = resolution, n_classes
        ch = feature_channels(base_channels, 0)
        self.from_image = nn.Conv2d(channels, ch, 1)
        blocks = []
        for level in range(1, k + 1):
            out = feature_channels(base_channels, level)
            blocks.append(DiscriminatorBlock(ch, out))
            ch = out
        self.blocks = nn.Sequential(*blocks)  # (N, ch, base, base)
        self.conv = nn.Conv2d(ch + 1, ch, 3, padding=1)
        self.fc = nn.Linear(ch * base * base, ch)
        self.out = nn.Linear(ch, 1)
        self.embed = nn.Linear(n_classes, ch, bias=False) if n_classes else None  # projection: one vector per class
        self.features = ch
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        assert images.shape[-1] == self.resolution, f"expected {self.resolution} px images, got {tuple(images.shape)}"
        x = F.leaky_relu(self.from_image(images), 0.2)
        x = minibatch_std(self.blocks(x))
        x = F.leaky_relu(self.conv(x), 0.2)
        h = F.leaky_relu(self.fc(x.flatten(1)), 0.2)  # (N, C)
        logits = self.out(h).flatten()
        if self.embed is not None:
            assert labels is not None, f"the conditional StyleGAN2 discriminator needs class labels ({self.n_classes} classes)"
            y = label_vectors(labels, self.n_classes, h.dtype)
            logits = logits + (self.embed(y) * h).sum(dim=1) / math.sqrt(self.features)
        return logits


class StyleGAN2Loss(GANLoss):
    """StyleGAN2's objectives: the adversarial loss of `gan.loss` (the paper's is nonsaturating, the
    logistic loss) with lazy regularisation (section 3.1 of the paper): R1 on real images every
    `r1_interval` D steps and the path-length penalty every `pl_interval` G steps, each scaled by
    its interval so that its average weight is the configured one. The step counters and the
    running mean path length are state: `state_dict` goes into the checkpoint, so a resumed run
    regularises at the same steps with the same mean. The terms are logged at every step (0 when
    skipped), so every loss record has the same keys."""

    def __init__(self, adversarial, r1_gamma: float, r1_interval: int, pl_weight: float, pl_interval: int,
                 pl_decay: float = 0.01):
        super().__init__(adversarial, 0.0, r1_gamma)
        self.r1_interval, self.pl_weight, self.pl_interval, self.pl_decay = r1_interval, pl_weight, pl_interval, pl_decay
        self.d_steps, self.g_steps = 0, 0
        self.pl_mean = torch.zeros(())  # float32 running mean of the path lengths

    @classmethod
    def from_config(cls, cfg) -> "StyleGAN2Loss":
        options = cfg.stylegan2
        return cls(ADVERSARIAL_LOSSES[cfg.loss](), options.r1_gamma, options.r1_interval, options.pl_weight,
                   options.pl_interval)

    def penalty(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Lazy R1: gamma / 2 * ||grad D(x)||^2 * r1_interval on every r1_interval-th D step (D's input
        as it sees it, augmented where augmentation is on)."""
        self.d_steps += 1
        if self.r1_gamma <= 0:
            return {}
        if self.d_steps % self.r1_interval:
            return {"penalty_r1": torch.zeros((), device=real.device)}
        x = real.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.logits(discriminator(x, labels)).sum(), x, create_graph=True)
        return {"penalty_r1": 0.5 * self.r1_gamma * self.r1_interval * grad.flatten(1).pow(2).sum(dim=1).mean()}

    def generator_penalty(self, generator: nn.Module, labels: torch.Tensor | None, batch_size: int,
                          rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Lazy path-length penalty: (|J_w^T y| - a)^2 * pl_weight * pl_interval on every pl_interval-th
        G step, over half a batch; y ~ N(0, I) / sqrt(R^2) image-space noise, a the running mean."""
        self.g_steps += 1
        if self.pl_weight <= 0:
            return {}
        device = next(generator.parameters()).device
        if self.g_steps % self.pl_interval:
            return {"penalty_pl": torch.zeros((), device=device)}
        n = max(batch_size // 2, 1)
        z = torch.randn(n, generator.latent_dim, generator=rng).to(device)
        ws = generator.mapping_ws(z, labels[:n] if labels is not None else None)  # (n, num_ws, w_dim)
        images = generator.synthesis(ws).float()  # (n, C, R, R)
        noise = torch.randn(images.shape, generator=rng).to(device) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()  # (n,)
        self.pl_mean = self.pl_mean.to(device).lerp(lengths.mean().detach(), self.pl_decay)
        return {"penalty_pl": (lengths - self.pl_mean).square().mean() * self.pl_weight * self.pl_interval}

    def state_dict(self) -> dict[str, Any]:
        return {"d_steps": self.d_steps, "g_steps": self.g_steps, "pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.d_steps, self.g_steps, self.pl_mean = state["d_steps"], state["g_steps"], state["pl_mean"].clone()
