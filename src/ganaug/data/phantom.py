"""Procedural PA chest radiographs: the embedded default data set.

Each image is drawn in normalised patient coordinates (u, v) in [-1, 1] (u towards
image-right, v downwards), so feature sizes and blurs are fractions of the field of view:
for one rng state, patient, lesion placement and exposure are the same at 28 px and at
256 px, and only pixel-level noise and texture differ. Anatomy is an attenuation map (soft
tissue, air in the lungs, heart and mediastinum, bone); brightness is
1 - exp(-mu * attenuation), windowed, so air is dark and bone and heart are bright as on a
conventional radiograph. Image-left is the patient's right.

Primary finding (class id = index in FINDINGS):
    normal     clear lungs with vascular markings fanning out from the hila
    bacterial  focal lobar consolidation: a fuzzy opacity in one lobe of one lung, cut off
               at the fissure and the lung border
    viral      diffuse bilateral interstitial pattern: reticular band-pass texture plus
               ground-glass haze in both lungs, densest around the hila
Pneumonia severity in (0, 1] scales the primary finding (1 = the full-blown textbook
pattern): a milder consolidation is fainter, smaller and softer-edged; a milder interstitial
pattern has fainter reticulation (times severity) and much fainter haze (times severity
squared: a diffuse haze lifts the mean lung brightness, which even a linear model on a
thumbnail reads easily). Normal images have no severity.
Extra findings, independent of the class:
    cardiomegaly  heart width / thorax width in CARDIOMEGALY_CTR (> 0.5) instead of NORMAL_CTR
    effusion      fluid at one lung base (sometimes both): costophrenic angle blunted,
                  meniscus rising towards the lateral chest wall
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

FINDINGS = ("normal", "bacterial", "viral")  # primary finding, index = class id
EXTRA_FINDINGS = ("cardiomegaly", "effusion")

MIN_SIZE, MAX_SIZE = 28, 256
NORMAL_CTR = (0.39, 0.46)  # cardiothoracic ratio, heart width / inner thorax width
CARDIOMEGALY_CTR = (0.55, 0.65)

# Pneumonia severities that make the task hard but learnable at 64 px: a logistic regression
# on 16 x 16 thumbnails, 600 training images, 3 balanced classes, reaches ~0.7 held-out
# accuracy (0.93-0.96 at full severity); a consolidation at 0.2 is faint but visible.
SUBTLE_SEVERITY_RANGE = (0.2, 0.4)

# Bacterial consolidation at severity s: the blob-cluster threshold rises and the density
# exponent grows by these times (1 - s), so milder lesions are smaller and softer-edged.
BACTERIAL_SHRINK = 0.2
BACTERIAL_SOFTEN = 0.5

_VESSEL_BINS = 1024  # angular resolution of the vessel pattern around each hilum


@dataclass(frozen=True)
class PhantomSet:
    images: np.ndarray  # (N, 1, H, W) uint8
    finding: np.ndarray  # (N,) int64 index into FINDINGS
    extras: np.ndarray  # (N, 2) uint8 multi-hot over EXTRA_FINDINGS
    # (N,) float32 pneumonia severity in (0, 1], 0 for normal; None = 1 for every pneumonia
    severity: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.severity is None:
            object.__setattr__(self, "severity", (self.finding > 0).astype(np.float32))
        assert self.severity.shape == self.finding.shape, (
            f"severity has shape {self.severity.shape}, expected {self.finding.shape}"
        )

    def __len__(self) -> int:
        return len(self.images)


def class_counts(n: int, class_fractions: dict[str, float]) -> dict[str, int]:
    """Exact per-class counts summing to n: largest-remainder rounding of the normalised fractions."""
    for name in class_fractions:
        if name not in FINDINGS:
            raise ValueError(f"class_fractions has unknown class {name!r}; expected exactly {FINDINGS}")
    for name in FINDINGS:
        if name not in class_fractions:
            raise ValueError(f"class_fractions is missing class {name!r}; expected exactly {FINDINGS}")
    fractions = np.array([float(class_fractions[name]) for name in FINDINGS])
    for name, fraction in zip(FINDINGS, fractions):
        if not (np.isfinite(fraction) and fraction >= 0):
            raise ValueError(f"class_fractions[{name!r}] must be a finite number >= 0, got {fraction}")
    if fractions.sum() <= 0:
        raise ValueError(f"class_fractions must sum to more than 0, got {class_fractions}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")

    quotas = n * fractions / fractions.sum()
    counts = np.floor(quotas).astype(np.int64)
    # The images left over go to the largest remainders; ties to the earlier class.
    leftover = n - int(counts.sum())
    counts[np.argsort(counts - quotas, kind="stable")[:leftover]] += 1
    for name, count in zip(FINDINGS, counts):
        if count < 1:
            raise ValueError(
                f"class {name!r} gets no image of n={n} with class_fractions={class_fractions}; "
                "every class needs at least one"
            )
    return {name: int(count) for name, count in zip(FINDINGS, counts)}


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 as x crosses 0, linear over `width`: an anti-aliased (x > 0)."""
    out = x * (1.0 / width) + 0.5
    return np.minimum(np.maximum(out, 0.0, out=out), 1.0, out=out)


@dataclass(frozen=True)
class _Patient:
    """Anatomy and positioning of one patient; lengths in normalised units (the field is 2 wide)."""

    shift: tuple[float, float]  # position in the field, (du, dv)
    scale: float  # size relative to the field
    rotation: float  # radians
    chest_wall: float  # soft tissue outside the ribs
    lung_lateral: float  # half-width of the rib cage at the lung bases
    lung_apex: float  # v of the apices
    dome: tuple[float, float]  # v of the diaphragm domes, (image-left, image-right)
    ctr: float  # cardiothoracic ratio
    heart_tilt: float  # radians; long axis from the base down towards the apex (image-right)
    hilum_v: float
    rib_phase: float  # v offset of the rib cage
    gastric_bubble: bool
    vessel_phases: np.ndarray  # (2, 12) phases of the angular vessel pattern, per lung


def _draw_patient(rng: np.random.Generator, cardiomegaly: bool) -> _Patient:
    # Same number of draws either way, so cardiomegaly changes only the heart.
    low, high = CARDIOMEGALY_CTR if cardiomegaly else NORMAL_CTR
    dome_left = rng.uniform(0.30, 0.40)  # the patient's right dome sits higher
    return _Patient(
        shift=(rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)),
        scale=rng.uniform(0.94, 1.06),
        rotation=math.radians(rng.uniform(-4.0, 4.0)),
        chest_wall=rng.uniform(0.10, 0.18),
        lung_lateral=rng.uniform(0.74, 0.82),
        lung_apex=rng.uniform(-0.80, -0.74),
        dome=(dome_left, dome_left + rng.uniform(0.02, 0.07)),
        ctr=rng.uniform(low, high),
        heart_tilt=math.radians(rng.uniform(30.0, 42.0)),
        hilum_v=rng.uniform(-0.18, -0.08),
        rib_phase=rng.uniform(-0.03, 0.03),
        gastric_bubble=bool(rng.random() < 0.7),
        vessel_phases=rng.uniform(0.0, 2 * np.pi, size=(2, 12)),
    )


def _patient_grid(size: int, patient: _Patient) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) patient coordinates of the pixel centres, each (size, size) float32."""
    pixel = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x, y = pixel[None, :] - np.float32(patient.shift[0]), pixel[:, None] - np.float32(patient.shift[1])
    cos = np.float32(math.cos(patient.rotation) / patient.scale)
    sin = np.float32(math.sin(patient.rotation) / patient.scale)
    return cos * x + sin * y, cos * y - sin * x


def render_phantom(
    size: int,
    finding: str,
    cardiomegaly: bool,
    effusion: bool,
    rng: np.random.Generator,
    return_masks: bool = False,
    severity: float = 1.0,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray | float]]:
    """One (size, size) uint8 chest radiograph.

    The rng is split into independent streams (patient, pneumonia, effusion, acquisition),
    so the same rng state with other labels gives the same patient, exposure and noise.
    severity in (0, 1] scales the pneumonia pattern (1 = full strength, ignored for
    "normal"); it draws nothing from the rng, so one rng state gives the same lesion
    placement and texture at every severity.
    With return_masks, also returns a dict of (size, size) bool masks:
        "lung_left", "lung_right"  lung fields (image-left / image-right) as aerated in health
        "heart", "body"
        "lesion"                   "pneumonia" | "effusion", each also given on its own;
                                   "pneumonia" is the extent of the finding, which does
                                   not fade with severity (a faint lesion still has a mask)
    and geometry in pixels: "heart_width", "thorax_width" (widest column extents of the
    heart mask and of the two lung fields), so heart_width / thorax_width is the
    cardiothoracic ratio.
    """
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    if finding not in FINDINGS:
        raise ValueError(f"finding must be one of {FINDINGS}, got {finding!r}")
    if not (isinstance(severity, (int, float, np.integer, np.floating)) and 0.0 < severity <= 1.0):
        raise ValueError(f"severity must be a number in (0, 1], got {severity!r}")
    severity = float(severity)  # a Python float keeps float32 maps float32 (NumPy 2 promotion)
    patient_rng, pneumonia_rng, effusion_rng, acquisition_rng = rng.spawn(4)
    patient = _draw_patient(patient_rng, cardiomegaly)
    u, v = _patient_grid(size, patient)
    pixel = 2.0 / (size * patient.scale)  # one pixel in patient units
    edge = max(pixel, 0.012)  # width of organ outlines, at least a pixel (anti-aliasing)
    side = np.abs(u)  # distance from the midline
    is_left = u < 0

    # --- Body: chest wall outside the ribs, shoulders, arms beside the chest, neck.
    # Inner rib-cage margin: widest at the bases, narrowing towards the apices.
    lateral_wall = patient.lung_lateral - 0.62 * np.minimum(v - 0.15, 0.0) ** 2
    torso_half_width = np.maximum(lateral_wall + patient.chest_wall, 1.25 * _ramp(-0.42 - v, 0.35))
    torso = _ramp(torso_half_width - side, 2 * edge)
    arms = _ramp(side - 0.98 - 0.3 * np.maximum(v + 0.2, 0.0), 2 * edge)  # hanging clear lower down
    skin_top = np.maximum(_ramp(v + 0.95 - 0.3 * side**2, 0.06), _ramp(0.2 - side, 0.04))  # shoulders, neck
    body = np.maximum(torso, arms) * skin_top
    # The beam crosses more tissue near the midline.
    depth = np.sqrt(np.maximum(1.0 - (side / (torso_half_width + 1e-3)) ** 2, 0.0))
    body_thickness = np.maximum(torso * (0.55 + 0.45 * depth), 0.6 * arms) * skin_top

    # --- Lung fields: lateral wall, rounded apex, mediastinal edge, diaphragm dome.
    dome = np.where(is_left, np.float32(patient.dome[0]), np.float32(patient.dome[1]))
    diaphragm = dome + 1.5 * (side - 0.4) ** 2
    apex_line = patient.lung_apex + 1.8 * (side - 0.33) ** 2
    lung_outer = (
        _ramp(lateral_wall - side, edge)
        * _ramp(side - 0.085, edge)
        * _ramp(v - apex_line, edge)
        * _ramp(diaphragm - v, edge)
    )
    # Air depth: the lung thins towards its margins, so the periphery is less dark.
    air_depth = (
        _ramp(lateral_wall - side, 0.25)
        * _ramp(side - 0.085, 0.2)
        * _ramp(v - apex_line, 0.2)
        * _ramp(diaphragm - v, 0.12)
    )

    # --- Heart: tilted ellipse sized to the cardiothoracic ratio, resting on the diaphragm.
    heart_half_width = patient.ctr * patient.lung_lateral
    tilt, aspect = patient.heart_tilt, 0.8  # aspect = short / long axis
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)
    extent = math.sqrt(cos_t**2 + (aspect * sin_t) ** 2)  # horizontal half-extent per unit long axis
    heart_long = heart_half_width / extent
    # The widest point lies below the centre; keep it above the image-right dome.
    widest_drop = heart_long * (1 - aspect**2) * sin_t * cos_t / extent
    heart_u = 0.3 * heart_half_width  # a third of the heart lies right of the midline (image-left)
    heart_v = patient.dome[1] - 0.08 - widest_drop
    hu, hv = u - heart_u, v - heart_v
    along, across = (cos_t * hu + sin_t * hv) / heart_long, (cos_t * hv - sin_t * hu) / (aspect * heart_long)
    heart = _ramp(1.0 - np.sqrt(along**2 + across**2), edge / heart_half_width)
    heart *= _ramp(diaphragm + 0.02 - v, edge)

    # --- Mediastinum with the aortic knob (image-right) and the trachea (air, midline).
    mediastinum_half_width = 0.12 + 0.05 * _ramp(v + 0.1, 0.4)  # widening down to the heart
    mediastinum = _ramp(mediastinum_half_width - np.abs(u - 0.015), edge) * _ramp(0.35 - v, edge)
    mediastinum *= _ramp(v - patient.lung_apex, 0.1)
    aortic_knob = _ramp(1.0 - np.hypot((u - 0.13) / 0.075, (v + 0.31) / 0.06), edge / 0.07)
    mediastinum = np.maximum(mediastinum, aortic_knob)
    trachea = _ramp(0.032 - np.abs(u - 0.005 - 0.03 * (v + 1)), edge) * _ramp(-0.3 - v, edge) * body

    lung_field = lung_outer * (1.0 - np.maximum(heart, mediastinum))

    # --- Vascular markings: streaks fanning out from each hilum, tapering to the periphery.
    hilum_u = np.where(is_left, np.float32(-0.2), np.float32(0.2))
    du, dv = u - hilum_u, v - patient.hilum_v
    hilar_distance = np.hypot(du, dv)
    angle = np.arctan2(dv, np.abs(du)) + 0.25 * np.sin(9.0 * hilar_distance)  # gently curving
    streaks = _vessel_profile(patient)[
        np.where(is_left, 0, _VESSEL_BINS)
        + np.clip(((angle + np.pi) * (_VESSEL_BINS / (2 * np.pi))).astype(np.int32), 0, _VESSEL_BINS - 1)
    ]
    taper = 0.2 + 0.6 * np.minimum(hilar_distance / 0.7, 1.0)  # fewer, thinner vessels further out
    streaks = np.maximum(streaks - taper, 0.0) / (1.0 - taper)
    hilar_shadow = np.exp(-((hilar_distance / 0.1) ** 2))  # pulmonary arteries at the hilum
    vessel_fill = 0.35 * streaks * np.exp(-hilar_distance / 0.3) + 0.5 * hilar_shadow

    # --- Findings, as the fraction of lung air displaced (fluid, cells) per pixel.
    pneumonia = pneumonia_extent = None
    if finding == "bacterial":
        pneumonia, pneumonia_extent = _lobar_consolidation(u, side, v, is_left, patient, pneumonia_rng, edge, severity)
    elif finding == "viral":
        pneumonia, pneumonia_extent = _interstitial_pattern(hilar_distance, patient, pneumonia_rng, size, severity)
    fluid = None
    if effusion:
        fluid = _pleural_effusion(side, v, is_left, diaphragm, lateral_wall, patient, effusion_rng)

    displaced = vessel_fill
    for finding_fill in (pneumonia, fluid):
        if finding_fill is not None:
            displaced = np.maximum(displaced, finding_fill)

    # --- Bones.
    ribs = _rib_cage(side, v, lateral_wall, apex_line, patient, pixel)
    # Clavicles: S-shaped, from beside the trachea up and out to the shoulder.
    clavicle_line = -0.58 - 0.22 * (side - 0.1) + 0.04 * np.sin(np.pi / 0.7 * (side - 0.1))
    clavicles = _ramp(0.034 - 0.008 * side - np.abs(v - clavicle_line), pixel)
    clavicles *= _ramp(side - 0.1, pixel) * _ramp(0.78 - side, 0.05) * body
    vertebrae = 0.6 + 0.4 * np.cos(np.pi / 0.125 * (v - patient.rib_phase)) ** 2  # discs darker
    spine = _ramp(0.07 - side, pixel) * vertebrae
    humeral_heads = _ramp(0.2 - np.hypot(side - 1.06, v + 0.8), edge) * body

    # --- Attenuation map, in soft-tissue units.
    attenuation = (
        0.90 * body_thickness
        - 0.68 * air_depth * lung_field * (1.0 - np.minimum(displaced, 1.0))
        + 0.08 * np.maximum(heart, mediastinum) * body
        - 0.30 * trachea
        + 0.11 * ribs
        + 0.20 * clavicles
        + 0.07 * spine
        + 0.25 * humeral_heads
    )
    if patient.gastric_bubble:  # air in the stomach under the image-right dome
        bubble_v = patient.dome[1] + 0.13
        bubble = _ramp(1.0 - np.hypot((u - 0.38) / 0.11, (v - bubble_v) / 0.06), 0.3)
        attenuation -= 0.35 * bubble * (1.0 if fluid is None else 1.0 - fluid)

    image = _acquire(attenuation, size, acquisition_rng)
    if not return_masks:
        return image

    lungs = lung_field > 0.5
    heart_mask = heart > 0.5
    pneumonia_mask = lungs & pneumonia_extent if pneumonia is not None else np.zeros_like(lungs)
    effusion_mask = lungs & (fluid > 0.5) if fluid is not None else np.zeros_like(lungs)
    return image, {
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


def _vessel_profile(patient: _Patient) -> np.ndarray:
    """(2 * _VESSEL_BINS,) float32 vessel density by angle around the hilum, image-left lung first.

    Bin j holds sum_f cos(f * 2 pi j / bins + phase_f) over f = 2..13 cycles per turn.
    """
    spectrum = np.zeros((2, _VESSEL_BINS // 2 + 1), dtype=np.complex128)
    spectrum[:, 2:14] = np.exp(1j * patient.vessel_phases) * (_VESSEL_BINS / 2)
    profile = np.fft.irfft(spectrum, n=_VESSEL_BINS, axis=-1)
    return np.clip(profile / 3.0, 0.0, 1.0).astype(np.float32).reshape(-1)


def _lobar_consolidation(u, side, v, is_left, patient, rng, edge, severity) -> tuple[np.ndarray, np.ndarray]:
    """Fuzzy opacity filling much of one lobe of one lung.

    Returns the (size, size) displaced-air fraction and the (size, size) bool extent of the
    opacity. Lower severity: proportionally less air displaced, a higher threshold on the
    blob cluster (a smaller opacity) and a larger exponent on the density (a softer margin).
    """
    in_left_lung = bool(rng.random() < 0.5)  # image-left = the patient's right: three lobes
    lobes = ("upper", "middle", "lower") if in_left_lung else ("upper", "lower")
    lobe = lobes[rng.integers(len(lobes))]
    # Fissures as projected on a PA film: horizontal (patient's right only) and oblique.
    horizontal = patient.hilum_v + 0.02 + 0.08 * (side - 0.2)
    oblique = patient.hilum_v + 0.22 + 0.35 * (0.4 - side)
    if lobe == "upper":
        # The patient's left upper lobe (with the lingula) reaches down to the oblique fissure.
        lobe_mask = _ramp((horizontal if in_left_lung else oblique - 0.12) - v, edge)
        centre = (rng.uniform(0.35, 0.55), patient.lung_apex + 0.35)
    elif lobe == "middle":
        lobe_mask = _ramp(v - horizontal, edge) * _ramp(0.6 - side, 0.15)
        centre = (rng.uniform(0.38, 0.5), patient.hilum_v + 0.22)
    else:
        lobe_mask = _ramp(v - oblique, edge)
        centre = (rng.uniform(0.55, 0.68), patient.hilum_v + 0.32)  # lateral, clear of the heart
    centre_u = -centre[0] if in_left_lung else centre[0]
    centre_v = centre[1] + rng.uniform(-0.06, 0.06)

    opacity = rng.uniform(0.75, 0.95)
    # A cluster of overlapping blobs, thresholded, with a ragged margin from smooth noise.
    density = np.zeros_like(u)
    for _ in range(4):
        blob_u, blob_v = centre_u + rng.normal(0, 0.1), centre_v + rng.normal(0, 0.07)
        sigma = rng.uniform(0.13, 0.2)
        density += np.exp(((u - blob_u) ** 2 + (v - blob_v) ** 2) * (-0.5 / sigma**2))
    margin = gaussian_filter(rng.standard_normal(u.shape, dtype=np.float32), 0.04 * u.shape[0], truncate=3.0)
    margin /= margin.std() + 1e-8
    # Both are exactly 0.45 and 0.7 at severity 1.
    threshold, exponent = 0.45 + BACTERIAL_SHRINK * (1.0 - severity), 0.7 + BACTERIAL_SOFTEN * (1.0 - severity)
    density = np.clip(1.8 * density / density.max() - threshold + 0.25 * margin, 0.0, 1.0) ** exponent
    side_mask = is_left if in_left_lung else ~is_left
    full_opacity = opacity * density * lobe_mask * side_mask  # this lesion at full density
    return severity * full_opacity, full_opacity > 0.15


def _interstitial_pattern(hilar_distance, patient, rng, size, severity) -> tuple[np.ndarray, np.ndarray]:
    """Reticular network plus ground-glass haze in both lungs, densest around the hila.

    Returns the (size, size) displaced-air fraction and the (size, size) bool extent of the
    pattern at full severity. Severity scales the reticular lines, severity squared the haze.
    """
    haze, lines = rng.uniform(0.25, 0.40), rng.uniform(0.2, 0.3)
    noise = rng.standard_normal((size, size), dtype=np.float32)
    fine, coarse = 0.008 * size * patient.scale, 0.02 * size * patient.scale
    band_pass = gaussian_filter(noise, fine) - gaussian_filter(noise, coarse)
    band_pass /= band_pass.std() + 1e-8
    reticular = np.exp(-((band_pass / 0.45) ** 2))  # bright lines along the zero crossings
    perihilar = 0.35 + 0.65 * np.exp(-((hilar_distance / 0.38) ** 2))
    extent = np.minimum(perihilar * (haze + lines * reticular), 1.0) > 0.15
    return np.minimum(perihilar * (severity**2 * haze + severity * lines * reticular), 1.0), extent


def _pleural_effusion(side, v, is_left, diaphragm, lateral_wall, patient, rng) -> np.ndarray:
    """Fluid at one lung base (both in one case of five), with a meniscus rising laterally."""
    where = rng.random()
    dome = np.where(is_left, np.float32(patient.dome[0]), np.float32(patient.dome[1]))
    level = dome + rng.uniform(-0.06, 0.06)  # fluid height at the mediastinal end
    rise = rng.uniform(0.18, 0.32)  # how far the meniscus climbs the lateral wall
    meniscus = level - rise * np.clip((side - 0.1) / (patient.lung_lateral - 0.1), 0.0, 1.2) ** 2
    fluid = _ramp(v - meniscus, 0.08) * _ramp(lateral_wall + 0.03 - side, 0.02)
    fluid *= _ramp(diaphragm + 0.01 - v, 0.02)  # fluid sits on the diaphragm
    if where < 0.2:
        return fluid
    return fluid * (is_left if where < 0.6 else ~is_left)


def _rib_cage(side, v, lateral_wall, apex_line, patient, pixel) -> np.ndarray:
    """Posterior ribs (arching up from the spine, down at the wall) and fainter anterior ribs
    (sloping down towards the sternum), each a band with brighter cortical edges."""
    cortex = max(pixel, 0.006)
    arch = -0.3 * side + 0.3 * side**2 + 0.8 * side**6
    phase = (v - arch - (-0.80 + patient.rib_phase)) * (1 / 0.125)  # 9 ribs, 0.125 apart
    index = np.round(phase)
    offset = np.abs(phase - index) * 0.125  # distance to the nearest rib centre line
    half_width = 0.022 + 0.01 * side
    posterior = _ramp(half_width - offset, cortex) * (0.65 + 0.35 * (offset / half_width) ** 4)
    posterior *= (index >= 0) & (index <= 8)

    phase = (v - 0.45 * (0.85 - side) - (-0.58 + patient.rib_phase)) * (1 / 0.15)
    index = np.round(phase)
    anterior = _ramp(0.028 - np.abs(phase - index) * 0.15, 3 * cortex) * ((index >= 0) & (index <= 4))
    anterior *= _ramp(side - 0.25, 0.1)

    cage = _ramp(lateral_wall + 0.06 - side, cortex) * _ramp(side - 0.05, cortex)
    cage *= _ramp(v - apex_line + 0.08, 0.05)
    return (posterior + 0.4 * anterior) * cage


def _acquire(attenuation: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exposure, detector blur, quantum noise, window and gamma -> (size, size) uint8."""
    mu, noise_level = rng.uniform(1.3, 1.6), rng.uniform(0.010, 0.025)
    low, high, gamma = rng.uniform(-0.04, 0.06), rng.uniform(0.82, 0.95), rng.uniform(0.8, 1.25)
    brightness = 1.0 - np.exp(-mu * np.maximum(attenuation, 0.0))
    brightness = gaussian_filter(brightness, 0.003 * size)
    # Quantum noise grows with the square root of the detected signal.
    noise = rng.standard_normal((size, size), dtype=np.float32)
    brightness += noise_level * np.sqrt(brightness + 0.05) * noise
    windowed = np.clip((brightness - low) / (high - low), 0.0, 1.0) ** gamma
    return np.rint(windowed * 255).astype(np.uint8)


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
    severity_range: tuple[float, float] = (1.0, 1.0),
) -> PhantomSet:
    """n labelled radiographs; image i depends only on (seed, i, its labels, severity_range).

    Each pneumonia image draws its severity uniformly from severity_range, from a stream of
    its own ((seed, i, 1)), so the range changes how strong the finding is, never the
    patient, the lesion placement or the noise.
    """
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    for name, rate in (("cardiomegaly_rate", cardiomegaly_rate), ("effusion_rate", effusion_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not (
        isinstance(severity_range, (tuple, list))
        and len(severity_range) == 2
        and all(isinstance(bound, (int, float, np.integer, np.floating)) for bound in severity_range)
        and 0.0 < severity_range[0] <= severity_range[1] <= 1.0
    ):
        raise ValueError(f"severity_range must be (low, high) with 0 < low <= high <= 1, got {severity_range!r}")
    low_severity, high_severity = (float(bound) for bound in severity_range)
    counts = class_counts(n, class_fractions)

    assignment_rng = np.random.default_rng(seed)
    finding = np.repeat(np.arange(len(FINDINGS), dtype=np.int64), [counts[name] for name in FINDINGS])
    assignment_rng.shuffle(finding)
    rates = [cardiomegaly_rate, effusion_rate]  # in EXTRA_FINDINGS order
    extras = (assignment_rng.random((n, len(EXTRA_FINDINGS))) < rates).astype(np.uint8)

    images = np.empty((n, 1, size, size), dtype=np.uint8)
    severity = np.zeros(n, dtype=np.float32)  # 0 for normal
    for i in tqdm(range(n), desc="phantoms", unit="img", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        image_severity = 1.0
        if finding[i] > 0:
            severity_rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1]))
            image_severity = severity_rng.uniform(low_severity, high_severity)
            severity[i] = image_severity
        images[i, 0] = render_phantom(
            size, FINDINGS[finding[i]], bool(extras[i, 0]), bool(extras[i, 1]), rng, severity=image_severity
        )
    return PhantomSet(images=images, finding=finding, extras=extras, severity=severity)
