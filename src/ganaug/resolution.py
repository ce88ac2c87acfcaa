"""Which square image sizes the GANs can be built at (no torch: params validation uses it).

Every architecture projects its input to base x base, then doubles k times (D mirrors it),
so a resolution is base * 2**k with base in 4..8 and k >= 2: 28 (7*4), 32, 64, 128,
224 (7*32) and 256 all work, 100 (25*4) does not.
"""

from __future__ import annotations


def resolution_plan(resolution: int) -> tuple[int, int]:
    """(base, n_doublings) with resolution == base * 2**n_doublings, base in 4..8, n >= 2."""
    k = 0
    while resolution % 2 ** (k + 1) == 0 and resolution // 2 ** (k + 1) >= 4:
        k += 1
    base = resolution // 2**k
    if k < 2 or base > 8:
        raise ValueError(
            f"GAN resolution {resolution}: expected base * 2**k with base in 4..8 and k >= 2 "
            "(e.g. 28, 32, 48, 64, 96, 128, 224, 256)"
        )
    return base, k


def buildable_resolutions(low: int, high: int) -> list[int]:
    """Every resolution in [low, high] that `resolution_plan` accepts, ascending."""
    out = []
    for resolution in range(low, high + 1):
        try:
            resolution_plan(resolution)
        except ValueError:
            continue
        out.append(resolution)
    return out
