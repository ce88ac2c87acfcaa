"""Procedural PA chest radiographs: the embedded default data set.

Each image is drawn in normalised patient coordinates (u, v) in [-1, 1] (u to image-right,
v downwards), so every feature size and blur is a fraction of the field of view and the
same seed gives the same anatomy at 28 px and at 256 px. Anatomy is an attenuation map
(soft tissue, air in the lungs, heart and mediastinum, bone); brightness is
1 - exp(-mu * attenuation), then windowed, so air is dark and bone and heart are bright
as on a conventional radiograph. Image-left is the patient's right.

Primary finding (class id = index in FINDINGS):
    normal     clear lungs with vascular markings from the hila
    bacterial  focal lobar consolidation: a fuzzy opacity in one lobe of one lung,
               clipped to the fissure and the lung border
    viral      diffuse bilateral interstitial pattern: reticular band-pass texture plus
               ground-glass haze in both lungs, densest around the hila
Extra findings, drawn independently of the class:
    cardiomegaly  heart width / thorax width > 0.5 (0.40-0.47 otherwise)
    effusion      fluid at a lung base, costophrenic angle blunted, meniscus rising laterally
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

FINDINGS = ("normal", "bacterial", "viral")  # primary finding, index = class id
EXTRA_FINDINGS = ("cardiomegaly", "effusion")

MIN_SIZE, MAX_SIZE = 28, 256

# Cardiothoracic ratio (heart width / inner thorax width) ranges.
NORMAL_CTR = (0.40, 0.47)
CARDIOMEGALY_CTR = (0.55, 0.65)


@dataclass(frozen=True)
class PhantomSet:
    images: np.ndarray  # (N, 1, H, W) uint8
    finding: np.ndarray  # (N,) int64 index into FINDINGS
    extras: np.ndarray  # (N, 2) uint8 multi-hot over EXTRA_FINDINGS

    def __len__(self) -> int:
        return len(self.images)


def class_counts(n: int, class_fractions: dict[str, float]) -> dict[str, int]:
    """Exact per-class counts summing to n, by largest-remainder rounding of the fractions."""
    for name in class_fractions:
        if name not in FINDINGS:
            raise ValueError(f"class_fractions has unknown class {name!r}; expected keys {FINDINGS}")
    for name in FINDINGS:
        if name not in class_fractions:
            raise ValueError(f"class_fractions is missing class {name!r}; expected keys {FINDINGS}")
    fractions = np.array([float(class_fractions[name]) for name in FINDINGS])
    if not np.all(np.isfinite(fractions)) or np.any(fractions < 0):
        raise ValueError(f"class_fractions must be finite and >= 0, got {class_fractions}")
    if fractions.sum() <= 0:
        raise ValueError(f"class_fractions must sum to more than 0, got {class_fractions}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    quotas = n * fractions / fractions.sum()
    counts = np.floor(quotas).astype(int)
    # Hand the leftover images to the largest remainders; ties go to the earlier class.
    leftover = n - counts.sum()
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:leftover]] += 1
    for name, count in zip(FINDINGS, counts):
        if count < 1:
            raise ValueError(
                f"class {name!r} gets 0 of n={n} images with class_fractions={class_fractions}; "
                "every class needs at least one image"
            )
    return {name: int(count) for name, count in zip(FINDINGS, counts)}


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 as x crosses 0, linear over `width` (an anti-aliased x > 0)."""
    return np.clip(x / width + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class _Anatomy:
    """One patient: every length in normalised units (the image is 2 wide)."""

    shift: tuple[float, float]  # patient position in the field, (du, dv)
    scale: float  # patient size relative to the field
    rotation: float  # radians
    body_width: float  # half-width of the torso
    lung_lateral: float  # half-width of the rib cage at the lung bases
    lung_apex: float  # v of the lung apices
    dome: tuple[float, float]  # v of the diaphragm dome, (image-left, image-right)
    ctr: float  # cardiothoracic ratio
    heart_tilt: float  # radians, apex towards image-right and down
    hilum_v: float
    rib_phase: float  # v offset of the rib cage
    gastric_bubble: bool
    vessel_phases: np.ndarray  # (2, K) random phases of the angular vessel pattern


def _draw_anatomy(rng: np.random.Generator, cardiomegaly: bool) -> _Anatomy:
    low, high = CARDIOMEGALY_CTR if cardiomegaly else NORMAL_CTR
    dome_left = rng.uniform(0.30, 0.40)  # image-left = patient's right, sits higher
    return _Anatomy(
        shift=(rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)),
        scale=rng.uniform(0.94, 1.06),
        rotation=np.deg2rad(rng.uniform(-4.0, 4.0)),
        body_width=rng.uniform(0.88, 0.96),
        lung_lateral=rng.uniform(0.74, 0.82),
        lung_apex=rng.uniform(-0.80, -0.74),
        dome=(dome_left, dome_left + rng.uniform(0.02, 0.07)),
        ctr=rng.uniform(low, high),
        heart_tilt=np.deg2rad(rng.uniform(30.0, 42.0)),
        hilum_v=rng.uniform(-0.18, -0.08),
        rib_phase=rng.uniform(-0.03, 0.03),
        gastric_bubble=bool(rng.random() < 0.7),
        vessel_phases=rng.uniform(0.0, 2 * np.pi, size=(2, 24)),
    )


def _patient_grid(size: int, anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) patient coordinates of each pixel centre, each (size, size)."""
    pixel = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    x, y = pixel[None, :] - anatomy.shift[0], pixel[:, None] - anatomy.shift[1]
    cos, sin = np.cos(anatomy.rotation), np.sin(anatomy.rotation)
    u = (cos * x + sin * y) / anatomy.scale
    v = (-sin * x + cos * y) / anatomy.scale
    return u, v


def render_phantom(
    size: int,
    finding: str,
    cardiomegaly: bool,
    effusion: bool,
    rng: np.random.Generator,
    return_masks: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray | float]]:
    """One (size, size) uint8 chest radiograph.

    The rng is split into four independent streams (anatomy, pneumonia, effusion,
    acquisition), so the same rng state with a different finding gives the same patient.
    With return_masks, also returns a dict of (size, size) bool masks
    "lung_left", "lung_right" (image-left / image-right lung fields, as aerated without
    disease), "heart", "body", "lesion" (pneumonia pattern or effusion), "pneumonia",
    "effusion", and floats "heart_width", "thorax_width" (pixels, widest column extent of
    the heart mask and of the two lung fields together).
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if finding not in FINDINGS:
        raise ValueError(f"finding must be one of {FINDINGS}, got {finding!r}")
    anatomy_rng, pneumonia_rng, effusion_rng, acquisition_rng = rng.spawn(4)
    anatomy = _draw_anatomy(anatomy_rng, cardiomegaly)
    u, v = _patient_grid(size, anatomy)
    pixel = 2.0 / (size * anatomy.scale)  # one pixel in patient units
    edge = max(pixel, 0.012)  # anti-aliased edge width of organ outlines

    # --- Body: torso, shoulders sloping from the neck, arms out of the field at the top.
    side = np.abs(u)
    is_left = u < 0
    # Inner rib-cage margin: widest at the bases, narrowing to the apices.
    lateral_wall = anatomy.lung_lateral - 0.62 * np.clip(0.15 - v, 0, None) ** 2
    # Chest wall soft tissue outside the ribs, flaring into the shoulders at the top.
    torso_half_width = np.maximum(lateral_wall + anatomy.body_width - 0.78, 0.0) + 0.3 * _ramp(-0.5 - v, 0.2)
    body = _ramp(torso_half_width - side, 2 * edge)
    shoulder_line = -0.95 + 0.35 * side**2
    body *= np.maximum(_ramp(v - shoulder_line, 0.06), _ramp(0.2 - side, 0.04))
    # Thicker towards the midline: the beam crosses more tissue there.
    body_thickness = body * (0.55 + 0.45 * np.sqrt(np.clip(1 - (side / (torso_half_width + 1e-3)) ** 2, 0, 1)))

    # --- Lung fields: lateral wall, rounded apex, medial mediastinal edge, diaphragm dome.
    dome = np.where(is_left, anatomy.dome[0], anatomy.dome[1])
    diaphragm = dome + 1.5 * (side - 0.4) ** 2
    apex_line = anatomy.lung_apex + 1.8 * (side - 0.33) ** 2
    lung_outer = (
        _ramp(lateral_wall - side, edge)
        * _ramp(side - 0.085, edge)
        * _ramp(v - apex_line, edge)
        * _ramp(diaphragm - v, edge)
    )
    # Air depth: the lung is thin at its margins, so the periphery is less dark.
    lung_depth = (
        _ramp(lateral_wall - side, 0.25)
        * _ramp(side - 0.085, 0.2)
        * _ramp(v - apex_line, 0.2)
        * _ramp(diaphragm - v, 0.12)
    )

    # --- Heart: tilted ellipse sized to the cardiothoracic ratio, sitting on the diaphragm.
    thorax_half_width = anatomy.lung_lateral
    heart_half_width = anatomy.ctr * thorax_half_width
    tilt = anatomy.heart_tilt
    # Long axis from the base (upper image-left) to the apex (lower image-right); its
    # horizontal half-extent is long * sqrt(cos² + (short/long)² sin²).
    aspect = 0.72
    heart_long = heart_half_width / np.sqrt(np.cos(tilt) ** 2 + (aspect * np.sin(tilt)) ** 2)
    heart_short = aspect * heart_long
    heart_centre = (0.15 * 2 * heart_half_width, 0.20 + 0.3 * (heart_long - 0.37))
    hu, hv = u - heart_centre[0], v - heart_centre[1]
    along = np.cos(tilt) * hu + np.sin(tilt) * hv
    across = -np.sin(tilt) * hu + np.cos(tilt) * hv
    heart_radius = np.sqrt((along / heart_long) ** 2 + (across / heart_short) ** 2)
    heart = _ramp(1.0 - heart_radius, edge / heart_half_width) * _ramp(dome + 0.12 - v, edge)

    # --- Mediastinum with the aortic knob (image-right) and the trachea (air, midline).
    mediastinum = _ramp(0.10 - np.abs(u - 0.01), edge) * _ramp(0.35 - v, edge) * _ramp(v - anatomy.lung_apex, 0.1)
    aortic_knob = _ramp(0.075 - np.hypot(u - 0.12, v + 0.33), edge)
    mediastinum = np.maximum(mediastinum, aortic_knob)
    trachea = _ramp(0.032 - np.abs(u - 0.005 - 0.03 * (v + 1)), edge) * _ramp(-0.3 - v, edge)

    lung_field = lung_outer * (1.0 - heart) * (1.0 - mediastinum)

    # --- Vascular markings: streaks radiating from each hilum, fading to the periphery.
    hilum_u = np.where(is_left, -0.2, 0.2)
    du, dv = u - hilum_u, v - anatomy.hilum_v
    hilar_distance = np.hypot(du, dv)
    angle = np.arctan2(dv, np.abs(du)) + 0.25 * np.sin(9.0 * hilar_distance)
    phases = np.where(is_left, 0, 1)
    streaks = np.zeros_like(u)
    for k in range(12):  # angular frequencies 2..13 per half turn
        streaks += np.cos((k + 2) * angle + anatomy.vessel_phases[phases, k])
    streaks = np.clip(streaks / 3.0, 0, None) ** 1.5
    hilar_fade = np.exp(-hilar_distance / 0.3)
    vessel_fill = np.clip(0.35 * streaks * hilar_fade + 0.5 * np.exp(-(hilar_distance / 0.1) ** 2), 0, 1)

    # --- Pneumonia: fraction of lung air replaced by fluid or cells, per pixel.
    pneumonia = np.zeros_like(u)
    if finding == "bacterial":
        pneumonia = _lobar_consolidation(u, v, is_left, lung_field, anatomy, pneumonia_rng, edge)
    elif finding == "viral":
        pneumonia = _interstitial_pattern(u, v, hilar_distance, lung_field, pneumonia_rng, size, anatomy)

    fluid = np.zeros_like(u)
    if effusion:
        fluid = _pleural_effusion(u, side, v, is_left, diaphragm, lateral_wall, anatomy, effusion_rng)

    # --- Bones.
    ribs = _rib_cage(side, v, lateral_wall, apex_line, anatomy, pixel)
    # S-shaped, from beside the trachea up and out to the shoulder.
    clavicle_line = -0.58 - 0.22 * (side - 0.1) + 0.04 * np.sin(np.pi * (side - 0.1) / 0.7)
    clavicle_half = 0.034 - 0.008 * side
    clavicles = (
        _ramp(clavicle_half - np.abs(v - clavicle_line), pixel) * _ramp(side - 0.1, pixel) * _ramp(0.85 - side, 0.05)
    )
    vertebra = 0.6 + 0.4 * np.cos(np.pi * (v - anatomy.rib_phase) / 0.125) ** 2  # discs darker
    spine = _ramp(0.07 - np.abs(u), pixel) * vertebra
    humeri = _ramp(0.2 - np.hypot(side - 1.06, v + 0.8), edge) * body

    # --- Attenuation map (soft-tissue units) and exposure.
    aerated = np.clip(lung_field * (1.0 - np.maximum(pneumonia, vessel_fill)) * (1.0 - fluid) , 0, 1)
    attenuation = (
        0.90 * body_thickness
        - 0.68 * lung_depth * aerated
        + 0.08 * np.maximum(heart, mediastinum) * body
        - 0.30 * trachea
        + 0.20 * fluid * (1.0 - lung_field)  # fluid outside the lung field blunts the angle
        + 0.11 * ribs
        + 0.25 * clavicles
        + 0.12 * spine
        + 0.25 * humeri
    )
    if anatomy.gastric_bubble:
        bubble_v = anatomy.dome[1] + 0.13
        bubble = _ramp(1.0 - np.hypot((u - 0.38) / 0.11, (v - bubble_v) / 0.06), 0.3)
        attenuation -= 0.35 * bubble * (1.0 - fluid)

    image = _acquire(attenuation, size, acquisition_rng)
    if not return_masks:
        return image

    masks = _masks(lung_field, is_left, heart, body, pneumonia, fluid, lung_outer)
    return image, masks


def _lobar_consolidation(u, v, is_left, lung_field, anatomy, rng, edge) -> np.ndarray:
    """Fuzzy opacity in one lobe of one lung, (size, size) fill fraction in [0, 1]."""
    left_lung = bool(rng.random() < 0.5)  # image-left = patient's right: three lobes
    lobes = ("upper", "middle", "lower") if left_lung else ("upper", "lower")
    lobe = lobes[rng.integers(len(lobes))]
    lung_side = np.abs(u)
    # Fissures as seen on a PA film: horizontal fissure (right lung only), oblique fissure.
    horizontal = anatomy.hilum_v + 0.02 + 0.08 * (lung_side - 0.2)
    oblique = anatomy.hilum_v + 0.22 + 0.35 * (0.4 - lung_side)
    if lobe == "upper":
        lobe_mask = _ramp((horizontal if left_lung else oblique - 0.12) - v, edge)
        centre_v = anatomy.lung_apex + 0.35
    elif lobe == "middle":
        lobe_mask = _ramp(v - horizontal, edge) * _ramp(0.6 - lung_side, 0.15)
        centre_v = anatomy.hilum_v + 0.22
    else:
        lobe_mask = _ramp(v - oblique, edge)
        centre_v = anatomy.dome[0 if left_lung else 1] - 0.12
    side_mask = is_left if left_lung else ~is_left
    centre_u = (-1 if left_lung else 1) * rng.uniform(0.35, 0.55)
    centre_v += rng.uniform(-0.06, 0.06)
    # A cluster of overlapping blobs with an irregular, fuzzy margin.
    density = np.zeros_like(u)
    for _ in range(4):
        cu, cv = centre_u + rng.normal(0, 0.08), centre_v + rng.normal(0, 0.06)
        sigma = rng.uniform(0.10, 0.17)
        density += np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * sigma**2))
    margin = gaussian_filter(rng.standard_normal(u.shape), 0.04 * u.shape[0])
    margin /= margin.std() + 1e-8
    density = np.clip(1.6 * density / density.max() - 0.5 + 0.25 * margin, 0, 1) ** 0.8
    return rng.uniform(0.75, 0.95) * density * lobe_mask * side_mask * (lung_field > 0)


def _interstitial_pattern(u, v, hilar_distance, lung_field, rng, size, anatomy) -> np.ndarray:
    """Reticular network plus ground-glass haze in both lungs, densest around the hila."""
    noise = rng.standard_normal((size, size))
    fine, coarse = 0.012 * size * anatomy.scale, 0.03 * size * anatomy.scale
    band_pass = gaussian_filter(noise, fine) - gaussian_filter(noise, coarse)
    band_pass /= band_pass.std() + 1e-8
    reticular = np.exp(-((band_pass / 0.45) ** 2))  # bright lines along the zero crossings
    perihilar = 0.35 + 0.65 * np.exp(-((hilar_distance / 0.38) ** 2))
    haze = rng.uniform(0.25, 0.40)
    lines = rng.uniform(0.35, 0.55)
    return np.clip(perihilar * (haze + lines * reticular), 0, 1) * (lung_field > 0)


def _pleural_effusion(u, side, v, is_left, diaphragm, lateral_wall, anatomy, rng) -> np.ndarray:
    """Fluid at one lung base (sometimes both), fill fraction with a meniscus rising laterally."""
    where = rng.random()
    if where < 0.2:
        side_mask = np.ones_like(u, dtype=bool)
    else:
        side_mask = is_left if where < 0.6 else ~is_left
    dome = np.where(is_left, anatomy.dome[0], anatomy.dome[1])
    level = dome + rng.uniform(-0.06, 0.06)  # fluid height at the medial end
    rise = rng.uniform(0.18, 0.32)  # meniscus climbs the lateral wall
    meniscus = level - rise * np.clip((side - 0.1) / (anatomy.lung_lateral - 0.1), 0, 1.2) ** 2
    fluid = _ramp(v - meniscus, 0.08) * _ramp(lateral_wall + 0.03 - side, 0.02)
    fluid *= _ramp(diaphragm + 0.1 - v, 0.05)
    return fluid * side_mask


def _rib_cage(side, v, lateral_wall, apex_line, anatomy, pixel) -> np.ndarray:
    """Posterior ribs (arching down laterally) and faint anterior ribs (sloping down medially)."""
    cortex_width = max(pixel, 0.006)
    # Posterior ribs: family of curves v = top + k * spacing + arch(side).
    arch = -0.3 * side + 0.3 * side**2 + 0.8 * side**6  # rising from the spine, down at the wall
    phase = (v - arch - (-0.80 + anatomy.rib_phase)) / 0.125
    index = np.round(phase)
    offset = (phase - index) * 0.125  # distance to the nearest rib centre line
    half = 0.022 + 0.01 * side
    # A band with brighter cortical edges.
    band = _ramp(half - np.abs(offset), cortex_width) * (0.65 + 0.35 * (np.abs(offset) / half) ** 4)
    posterior = band * (index >= 0) * (index <= 8)
    # Anterior ribs: from the lateral wall downwards towards the sternum.
    slope = -0.45 * (0.85 - side)
    phase = (v + slope - (-0.58 + anatomy.rib_phase)) / 0.15
    offset = (phase - np.round(phase)) * 0.15
    anterior = _ramp(0.028 - np.abs(offset), 3 * cortex_width) * (np.round(phase) >= 0) * (np.round(phase) <= 4)
    anterior *= _ramp(side - 0.25, 0.1)
    cage = _ramp(lateral_wall + 0.06 - side, cortex_width) * _ramp(side - 0.05, cortex_width)
    cage *= _ramp(v - apex_line + 0.08, 0.05)
    return (posterior + 0.4 * anterior) * cage


def _acquire(attenuation: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exposure, detector blur, quantum noise, window and gamma -> (size, size) uint8."""
    mu = rng.uniform(1.3, 1.6)
    brightness = 1.0 - np.exp(-mu * np.clip(attenuation, 0, None))
    brightness = gaussian_filter(brightness, 0.003 * size)
    noise_level = rng.uniform(0.010, 0.025)
    brightness += noise_level * np.sqrt(brightness + 0.05) * rng.standard_normal(brightness.shape)
    low = rng.uniform(-0.04, 0.06)
    high = rng.uniform(0.82, 0.95)
    gamma = rng.uniform(0.8, 1.25)
    windowed = np.clip((brightness - low) / (high - low), 0, 1) ** gamma
    return np.round(windowed * 255).astype(np.uint8)


def _masks(lung_field, is_left, heart, body, pneumonia, fluid, lung_outer) -> dict[str, np.ndarray | float]:
    lungs = lung_field > 0.5
    heart_mask = heart > 0.5
    pneumonia_mask = (pneumonia > 0.15) & lungs
    effusion_mask = (fluid > 0.5) & (lung_outer > 0.5)
    return {
        "lung_left": lungs & is_left,
        "lung_right": lungs & ~is_left,
        "heart": heart_mask,
        "body": body > 0.5,
        "lesion": pneumonia_mask | effusion_mask,
        "pneumonia": pneumonia_mask,
        "effusion": effusion_mask,
        "heart_width": _column_extent(heart_mask),
        "thorax_width": _column_extent(lungs),
    }


def _column_extent(mask: np.ndarray) -> float:
    """Width in pixels from the first to the last column the mask touches."""
    columns = np.flatnonzero(mask.any(axis=0))
    return float(columns[-1] - columns[0] + 1) if len(columns) else 0.0


def generate_phantoms(
    n: int,
    size: int,
    seed: int,
    class_fractions: dict[str, float],
    cardiomegaly_rate: float,
    effusion_rate: float,
    progress: bool = False,
) -> PhantomSet:
    """n labelled radiographs; image i depends only on (seed, i, its labels)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    for name, rate in (("cardiomegaly_rate", cardiomegaly_rate), ("effusion_rate", effusion_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    counts = class_counts(n, class_fractions)

    assignment_rng = np.random.default_rng(seed)
    finding = np.repeat(np.arange(len(FINDINGS), dtype=np.int64), list(counts.values()))
    assignment_rng.shuffle(finding)
    extras = (assignment_rng.random((n, 2)) < [cardiomegaly_rate, effusion_rate]).astype(np.uint8)

    images = np.empty((n, 1, size, size), dtype=np.uint8)
    for i in tqdm(range(n), desc="phantoms", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        images[i, 0] = render_phantom(size, FINDINGS[finding[i]], bool(extras[i, 0]), bool(extras[i, 1]), rng)
    return PhantomSet(images=images, finding=finding, extras=extras)
