"""The quality gate between a trained generator and a training set: the generator's final
evaluation (what train_gan recorded in `generator.pt`'s info and `metrics/gan.json`) must reach
minimum levels of label fidelity, coverage and diversity, or synthesize writes nothing.

Issue 10: a collapsed DCGAN (one image repeated; label fidelity 0, recall 0) and a flat-noise
one were both mixed into Model B's training set without a word, and evaluate printed a gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ganaug.quality.translation import unchanged_message

if TYPE_CHECKING:  # typing only: the gate reads a generator's recorded evaluation, not its networks
    from ganaug.config import SynthesizeConfig
    from ganaug.gan.generator import TrainedGenerator

# (metric in the final evaluation, synthesize.* key holding its minimum level)
GATE_METRICS = (
    ("label_fidelity_relative", "min_label_fidelity"),
    ("coverage_domain", "min_coverage"),
    ("diversity", "min_diversity"),
    ("translation_change", "min_translation_change"),  # translators only (gan.arch=cyclegan): ganaug.quality.translation
)
TRANSLATOR_ONLY = ("translation_change",)  # checked and recorded only when the caller gives a level (a translator)
OVERRIDE_KEY = "synthesize.override_gate"


class QualityGateError(ValueError):
    """The generator's final evaluation is below the synthesize.min_* levels."""


@dataclass(frozen=True)
class GateDecision:
    values: dict[str, float | None]  # metric -> its final value (None: not in the evaluation)
    levels: dict[str, float]  # metric -> the minimum level (0 = not checked)
    failures: list[str]  # one line per metric below its level (or missing), naming the key

    @property
    def passed(self) -> bool:
        return not self.failures

    def record(self, overridden: bool) -> dict[str, Any]:
        """What the synthetic set's manifest keeps."""
        return {"passed": self.passed, "overridden": overridden, "values": self.values, "levels": self.levels,
                "failures": self.failures}


def relative_label_fidelity(label_fidelity: float, real_hit_rate: dict[int, float], counts: dict[int, int]) -> float:
    """Label fidelity over what the reference classifier achieves on REAL images in the same
    class mix ({class: share of real class-c images it assigns to c}, {class: samples}): the
    oracle is imperfect (on the default phantom it assigns about half of the real normals to
    pneumonia), so 1 = generated images as recognisable as real ones. NaN when it recognises none."""
    total = sum(counts.values())
    expected = sum(real_hit_rate[c] * n for c, n in counts.items()) / total
    return label_fidelity / expected if expected > 0 else float("nan")


def gate_decision(final_quality: dict[str, float], levels: dict[str, float]) -> GateDecision:
    """Compare a generator's final evaluation with {metric: level} ({} or a level of 0 skips a
    metric); a checked metric missing from the evaluation fails (nothing says it is good)."""
    values: dict[str, float | None] = {}
    failures = []
    for metric, key in GATE_METRICS:
        if metric in TRANSLATOR_ONLY and metric not in levels:
            continue  # a noise-driven generator: not part of its record
        level = levels.get(metric, 0.0)
        value = final_quality.get(metric)
        values[metric] = None if value is None else float(value)
        if level <= 0:
            continue
        if value is None:
            failures.append(f"{metric} was not measured (synthesize.{key}={level})")
        elif not value >= level:  # NaN fails too
            failures.append(f"{metric} {value:.3f} < synthesize.{key}={level}")
    return GateDecision(values, {m: levels.get(m, 0.0) for m, _ in GATE_METRICS if m in values}, failures)


def gate_message(decision: GateDecision, generator: str, look_at: str = "models/gan/samples.png and metrics/gan.json") -> str:
    """The refusal: the numbers, the levels, and the key that overrides."""
    return (
        f"quality gate: generator {generator} failed its final evaluation: {'; '.join(decision.failures)}. "
        "Its images would enter Model B's training set and the comparison would measure a broken generator. "
        f"Look at {look_at}, then retrain (another gan recipe or gan.seed), "
        f"lower the levels, or set {OVERRIDE_KEY}=true to write the set anyway (recorded in the manifest)"
    )


def gate_summary(record: dict[str, Any] | None) -> str:
    """One line for evaluate's output from a manifest's `quality_gate` record."""
    if record is None:
        return "quality gate: not recorded (the synthetic set was written before synthesize had a gate)"
    if record["overridden"]:
        return (f"quality gate overridden ({OVERRIDE_KEY}=true): {'; '.join(record['failures'])}. "
                "Model B was trained with images of a generator that failed its quality levels: read B - A with that in mind")
    shown = ", ".join(f"{m} {v:.3f}" for m, v in record["values"].items() if v is not None)
    return f"quality gate: passed ({shown})"


def check_gate(generator: TrainedGenerator, generator_file: str, cfg: SynthesizeConfig,
               look_at: str = "models/gan/samples.png and metrics/gan.json") -> GateDecision:
    """The gate on a trained generator's final evaluation at the synthesize.min_* levels (what
    synthesize and the mixing study's generator loader both apply); raises QualityGateError when
    it fails and synthesize.override_gate is false."""
    levels = {"label_fidelity_relative": cfg.min_label_fidelity, "coverage_domain": cfg.min_coverage,
              "diversity": cfg.min_diversity}
    if generator.translator:  # a translator that returns its input unchanged fails here
        levels["translation_change"] = cfg.min_translation_change
        warning = unchanged_message(generator.info.get("final_quality") or {}, cfg.min_translation_change)
        if warning:
            print(f"WARNING: {warning}")
    decision = gate_decision(generator.info.get("final_quality") or {}, levels)
    if not decision.passed and not cfg.override_gate:
        skipped = generator.info.get("quality_skipped")  # multi-label generators: measured without the reference network
        note = (f". Not measured for this generator: {skipped}; set synthesize.min_coverage: 0 and "
                "synthesize.min_label_fidelity: 0 to gate it on diversity alone") if skipped else ""
        raise QualityGateError(gate_message(decision, generator_file, look_at) + note)
    if not decision.passed:
        print(f"WARNING: quality gate overridden (synthesize.override_gate=true): {'; '.join(decision.failures)}")
    return decision
