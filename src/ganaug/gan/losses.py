"""GAN losses as small callables.

Adversarial losses work on D's real/fake logits: `NonSaturatingLoss`, `HingeLoss`,
`WassersteinLoss` (`.discriminator(real_logits, fake_logits)`, `.generator(fake_logits)`).
`GANLoss` turns D's outputs into named loss terms for the D and G steps and adds the optional
gradient penalties (WGAN-GP, R1); `ACGANLoss` adds the auxiliary class loss. The training loop
sums the terms it gets, so an architecture whose D returns more than logits (AC-GAN) needs its
own loss here, not a branch in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class NonSaturatingLoss:
    """Binary cross-entropy GAN loss (Goodfellow et al.), with the non-saturating G loss
    used by DCGAN: D maximises log D(x) + log(1 - D(G(z))), G maximises log D(G(z))."""

    collapse_below = 1e-3  # D loss of a step with D(x) ~ 0.9995 and D(G(z)) ~ 0.0005 on average: D is certain

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class HingeLoss:
    """Hinge loss (Lim & Ye 2017; SN-GAN, BigGAN): D minimises relu(1 - D(x)) + relu(1 + D(G(z))),
    G minimises -D(G(z))."""

    collapse_below = 1e-3  # nearly every real and fake image beyond the margin: D gets almost no gradient

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


class WassersteinLoss:
    """Wasserstein critic loss (Arjovsky et al. 2017), used with a gradient penalty (WGAN-GP):
    the critic minimises D(G(z)) - D(x), G minimises -D(G(z))."""

    collapse_below = None  # the critic is unbounded and shift-invariant: no "D is certain" level

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


ADVERSARIAL_LOSSES = {"nonsaturating": NonSaturatingLoss, "hinge": HingeLoss, "wgan_gp": WassersteinLoss}


def _input_gradients(discriminator_logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d sum(logits) / d inputs, kept in the graph (the penalty is differentiated again)."""
    (grad,) = torch.autograd.grad(discriminator_logits.sum(), inputs, create_graph=True)
    return grad.flatten(1)  # (N, C*H*W)


@dataclass
class GANLoss:
    """D and G objectives for discriminators that return real/fake logits (N,) (dcgan, cgan).

    Each method returns named loss terms; the step minimises their sum."""

    adversarial: Any  # NonSaturatingLoss | HingeLoss | WassersteinLoss
    gp_weight: float = 0.0  # WGAN-GP: weight of (||grad D(x_hat)|| - 1)^2 on real/fake interpolates; 0 = off
    r1_gamma: float = 0.0  # R1: gamma / 2 * ||grad D(x)||^2 on real images; 0 = off

    @classmethod
    def from_config(cls, cfg: Any) -> "GANLoss":
        """The loss of params.yaml `gan` (loss, gp_weight, r1_gamma)."""
        return cls(ADVERSARIAL_LOSSES[cfg.loss](), cfg.gp_weight if cfg.loss == "wgan_gp" else 0.0, cfg.r1_gamma)

    def logits(self, d_out: Any) -> torch.Tensor:
        """Real/fake logits (N,) from D's output, as float32."""
        return d_out.float()

    def discriminator(self, real_out: Any, fake_out: Any, real_labels: torch.Tensor | None,
                      fake_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"loss_d_adv": self.adversarial.discriminator(self.logits(real_out), self.logits(fake_out))}

    def generator(self, fake_out: Any, fake_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"loss_g_adv": self.adversarial.generator(self.logits(fake_out))}

    def penalty(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Gradient penalties on D's inputs, in float32 (outside autocast); {} when both are off.

        `real` and `fake` are D's inputs of this step (augmented where augmentation is on);
        `rng` (CPU) draws the interpolation weights, so a resumed run draws the same ones."""
        terms: dict[str, torch.Tensor] = {}
        if self.gp_weight > 0:
            eps = torch.rand(len(real), 1, 1, 1, generator=rng).to(real.device)
            mixed = (eps * real.detach().float() + (1 - eps) * fake.detach().float()).requires_grad_(True)
            grad = _input_gradients(self.logits(discriminator(mixed, labels)), mixed)
            terms["penalty_gp"] = self.gp_weight * ((grad.norm(2, dim=1) - 1.0) ** 2).mean()
        if self.r1_gamma > 0:
            x = real.detach().float().requires_grad_(True)
            grad = _input_gradients(self.logits(discriminator(x, labels)), x)
            terms["penalty_r1"] = 0.5 * self.r1_gamma * grad.pow(2).sum(dim=1).mean()
        return terms

    def generator_penalty(self, generator: nn.Module, labels: torch.Tensor | None, batch_size: int,
                          rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Regularisation terms of the G step (StyleGAN2's path length); {} for the other losses."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a loss keeps between steps (lazy-regularisation counters, running means), for the checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert not state, f"{type(self).__name__} keeps no state, got {sorted(state)}"


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices (N,); binary cross-entropy per finding for multi-hot (N, K)."""
    if labels.ndim == 1:
        return F.cross_entropy(class_logits.float(), labels)
    return F.binary_cross_entropy_with_logits(class_logits.float(), labels.float())


@dataclass
class ACGANLoss(GANLoss):
    """AC-GAN (Odena et al. 2017): D returns (real/fake logits, class logits). D minimises the
    adversarial loss + aux_weight * class loss on real and generated images; G minimises its
    adversarial loss + aux_weight * class loss of its images under their intended labels."""

    aux_weight: float = 1.0  # weight of the auxiliary class loss

    @classmethod
    def from_config(cls, cfg: Any) -> "ACGANLoss":
        base = GANLoss.from_config(cfg)
        return cls(base.adversarial, base.gp_weight, base.r1_gamma, cfg.aux_weight)

    def logits(self, d_out: Any) -> torch.Tensor:
        return d_out[0].float()

    def discriminator(self, real_out: Any, fake_out: Any, real_labels: torch.Tensor | None,
                      fake_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        assert real_labels is not None and fake_labels is not None, "AC-GAN training needs class labels"
        aux = class_loss(real_out[1], real_labels) + class_loss(fake_out[1], fake_labels)
        return {**super().discriminator(real_out, fake_out, real_labels, fake_labels), "loss_d_aux": self.aux_weight * aux}

    def generator(self, fake_out: Any, fake_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        assert fake_labels is not None, "AC-GAN training needs class labels"
        return {**super().generator(fake_out, fake_labels), "loss_g_aux": self.aux_weight * class_loss(fake_out[1], fake_labels)}
