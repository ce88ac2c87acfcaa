"""The generator registry: every train_gan run registers a version of `ganaug-generator` with
its model card and the `challenger` alias; `promote` moves `champion` to it only when it
passes every named gate, and `rollback` returns `champion` to the version it replaced.

Gates (each reported pass / fail / refused / skipped with its numbers, and stored in the
candidate's tags):

    compatibility  same data set hash and same feature extractor as the champion; otherwise
                   the two cannot be compared and promotion is *refused* (not failed)
    quality        the promote.metric distance (fd_domain by default; lower is better) is lower
                   by at least promote.quality_margin (relative), and the intervals support it:
                   the challenger's upper bound is below the champion's lower bound (two 95 %
                   half-sample intervals that do not overlap)
    memorisation   the copy rates of the memorisation audit, pixel and domain feature space, are
                   at most promote.max_copy_rate_pixel / max_copy_rate_domain (a generator that
                   returns its training images has an excellent FD and a copy rate near 1)
    downstream     when an evaluation of this generator was recorded (`record_downstream`, tags
                   downstream.*): the multiplicity-corrected interval of its arm against
                   real-only must not show harm (upper bound >= 0); skipped otherwise

Aliases (MLflow 3: aliases, not stages): `challenger` (the newest train_gan run), `champion`,
`previous-champion` (the champion a promotion replaced; `rollback` restores it). Each promoted
version keeps the number of the version it replaced (tag promotion.replaced), so rollbacks chain.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ganaug.config import PromoteConfig
from ganaug.tracking import mlflow_utils
from ganaug.tracking.pyfunc_generator import REGISTERED_NAME

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
QUALITY_METRICS = ("fd_domain", "kd_domain", "fid_inception")  # distances with half-sample intervals: lower is better
DOWNSTREAM_KEYS = ("arm", "metric", "difference", "corrected_ci_low", "corrected_ci_high", "verdict")
REPLACED_TAG = "promotion.replaced"  # on a promoted version: the champion it replaced ("" = none)
PASS, FAIL, REFUSED, SKIPPED = "pass", "fail", "refused", "skipped"


# ---------------------------------------------------------------------------------------
# Model card


def model_card(final: Mapping[str, float], gan_params: Mapping[str, Any], data_meta: Mapping[str, Any],
               classes: list[str], extractor: str, resolution: int, budget: Mapping[str, Any],
               device: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """(tags, description) of a generator version.

    final: the last evaluation's metrics (with `<name>_ci_low/_ci_high` and memorisation_*);
    gan_params: the flattened gan section (`gan.<key>`); budget: epochs, steps, images_seen,
    train_seconds; device: `ganaug.device.describe`."""
    tags = {
        "data.dataset_hash": str(data_meta["dataset_hash"]),
        "data.source": str(data_meta["source"].get("name")),
        "classes": ",".join(classes),
        "feature_extractor": extractor,
        "resolution": str(resolution),
        **{k if k.startswith("gan.") else f"gan.{k}": str(v) for k, v in gan_params.items()},
        **{f"budget.{k}": str(v) for k, v in budget.items()},
        **{f"device.{k}": str(v) for k, v in device.items()},
        **{f"metric.{k}": f"{float(v):.6g}" for k, v in final.items()},
    }
    lines = [
        f"{gan_params.get('gan.arch', gan_params.get('arch'))} ({gan_params.get('gan.mode', gan_params.get('mode'))}) "
        f"generator of {', '.join(classes)} at {resolution} px, trained on the train split of data set "
        f"{str(data_meta['dataset_hash'])[:12]} ({data_meta['source'].get('name')}).",
        "Intended use: research on synthetic augmentation of classifier training sets; not for diagnosis.",
        f"Budget: {budget.get('epochs')} epochs, {budget.get('steps')} steps, {budget.get('images_seen')} real images "
        f"through D in {float(budget.get('train_seconds', 0)):.0f} s on {device.get('device')}"
        f"{' (' + device['device_name'] + ')' if 'device_name' in device else ''}.",
        *([f"Initialised from {init_from} (gan.init_from: transfer learning), not from random weights."]
          if (init_from := gan_params.get("gan.init_from", gan_params.get("init_from"))) not in (None, "None") else []),
        f"Quality (against the train split, features {extractor}): {quality_note(final)}",
        memorisation_note(final),
    ]
    return tags, "\n\n".join(lines)


def quality_note(final: Mapping[str, float]) -> str:
    """`fd_domain 3.2 [2.9, 3.6], …` for the quality metrics the evaluation has."""
    parts = []
    for name in (*QUALITY_METRICS, "coverage_domain", "label_fidelity", "diversity"):
        if name in final:
            low, high = final.get(f"{name}_ci_low"), final.get(f"{name}_ci_high")
            interval = f" [{low:.4g}, {high:.4g}]" if low is not None and high is not None else ""
            parts.append(f"{name} {final[name]:.4g}{interval}")
    return (", ".join(parts) or "no final evaluation recorded") + " (tags metric.*; 95 % intervals)."


def memorisation_note(final: Mapping[str, float]) -> str:
    """The model card's sentence on the memorisation audit of the final evaluation."""
    rates = {space: final.get(f"memorisation_{space}_copy_rate") for space in ("pixel", "domain")}
    measured = ", ".join(f"{rate:.3g} in {space} space" for space, rate in rates.items() if rate is not None)
    if not measured:
        return "Memorisation not audited: no final quality evaluation was recorded."
    return (f"Memorisation audit of the final evaluation's images against the train split: copy rate {measured} "
            "(tags metric.memorisation_*; closest pairs: the run's memorisation_closest_pairs.png).")


def register_generator(model_uri: str, tags: Mapping[str, str], description: str, name: str = REGISTERED_NAME) -> str:
    """Register a logged generator as a new version with its model card (the tags in the same
    call) and give it the `challenger` alias; returns the version number."""
    version = str(mlflow.register_model(model_uri, name, tags=dict(tags)).version)
    _describe_and_challenge(version, description, name)
    return version


def register_card(version: str, tags: Mapping[str, str], description: str, name: str = REGISTERED_NAME) -> None:
    """Write the model card onto an already registered version (one whose run was killed before
    its card was complete) and give it the `challenger` alias."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    _describe_and_challenge(str(version), description, name)


def _describe_and_challenge(version: str, description: str, name: str) -> None:
    client = mlflow.MlflowClient()
    client.update_model_version(name, version, description=description)
    client.set_registered_model_alias(name, CHALLENGER, version)


def record_downstream(version: str, result: Mapping[str, Any], name: str = REGISTERED_NAME) -> None:
    """Record an evaluation of this generator on its version (tags downstream.*, and a line of
    the description): `result` = {arm, metric, difference (arm - real-only, higher is better),
    corrected_ci_low, corrected_ci_high (multiplicity-corrected interval), verdict}."""
    missing = [k for k in DOWNSTREAM_KEYS if k not in result]
    if missing:
        raise ValueError(f"downstream result for {name} v{version} lacks {missing}; expected keys {list(DOWNSTREAM_KEYS)}")
    low, high, difference = (float(result[k]) for k in ("corrected_ci_low", "corrected_ci_high", "difference"))
    if not low <= difference <= high:
        raise ValueError(f"downstream result for {name} v{version}: difference {difference} outside its interval [{low}, {high}]")
    client = mlflow.MlflowClient()
    for key, value in result.items():
        client.set_model_version_tag(name, str(version), f"downstream.{key}", str(value))
    current = client.get_model_version(name, str(version)).description or ""
    kept = "\n\n".join(p for p in current.split("\n\n") if not p.startswith("Downstream:"))
    line = (f"Downstream: arm {result['arm']} vs real-only, {result['metric']} difference {difference:+.4g}, corrected "
            f"interval [{low:+.4g}, {high:+.4g}]: {result['verdict']} (tags downstream.*).")
    client.update_model_version(name, str(version), description=f"{kept}\n\n{line}" if kept else line)


def version_of_run(run_id: str, name: str = REGISTERED_NAME) -> str | None:
    """The registered version of `name` logged by MLflow run `run_id` (train_gan's), or None."""
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in versions)) if versions else None


# ---------------------------------------------------------------------------------------
# Gates: pure functions of two versions' tags


@dataclass(frozen=True)
class Gate:
    name: str  # compatibility | quality | memorisation | downstream
    status: str  # pass | fail | refused | skipped
    detail: str  # the numbers behind the status


def _number(tags: Mapping[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def compatibility_gate(candidate: Mapping[str, str], champion: Mapping[str, str] | None) -> Gate:
    if champion is None:
        return Gate("compatibility", PASS, "no champion yet: nothing to compare with")
    for key, what in (("data.dataset_hash", "data set hash"), ("feature_extractor", "feature extractor")):
        new, old = candidate.get(key), champion.get(key)
        if new is None or old is None or new != old:
            return Gate("compatibility", REFUSED, f"{what} differs (challenger {new}, champion {old}): their metrics "
                        "are not comparable")
    return Gate("compatibility", PASS, f"same data set {candidate['data.dataset_hash'][:12]} and feature extractor "
                f"{candidate['feature_extractor']}")


def quality_gate(candidate: Mapping[str, str], champion: Mapping[str, str] | None, metric: str, margin: float) -> Gate:
    if metric not in QUALITY_METRICS:
        raise ValueError(f"promote.metric={metric!r}: expected one of {list(QUALITY_METRICS)}")
    new, new_low, new_high = (_number(candidate, f"metric.{metric}{s}") for s in ("", "_ci_low", "_ci_high"))
    if new is None or new_low is None or new_high is None:
        return Gate("quality", FAIL, f"the challenger has no {metric} with an interval (tags metric.{metric}, "
                    f"metric.{metric}_ci_high)")
    if champion is None:
        return Gate("quality", PASS, f"no champion yet; {metric} {new:.4g} [{new_low:.4g}, {new_high:.4g}]")
    old, old_low, old_high = (_number(champion, f"metric.{metric}{s}") for s in ("", "_ci_low", "_ci_high"))
    if old is None or old_low is None or old_high is None:
        return Gate("quality", FAIL, f"the champion has no {metric} with an interval: the improvement cannot be judged")
    target = (1 - margin) * old
    numbers = f"{metric} {new:.4g} [{new_low:.4g}, {new_high:.4g}] vs champion {old:.4g} [{old_low:.4g}, {old_high:.4g}]"
    if new > target:
        return Gate("quality", FAIL, f"{numbers}: not lower by the margin {margin:g} (needs <= {target:.4g}, "
                    "promote.quality_margin)")
    if new_high >= old_low:
        return Gate("quality", FAIL, f"{numbers}: the intervals overlap (challenger's upper bound {new_high:.4g} >= "
                    f"champion's lower bound {old_low:.4g}), so the improvement may be noise")
    return Gate("quality", PASS, f"{numbers}: lower by {1 - new / old:.1%} (margin {margin:g}) and the intervals "
                "do not overlap")


def memorisation_gate(candidate: Mapping[str, str], max_pixel: float, max_domain: float) -> Gate:
    parts, failed = [], False
    for space, limit in (("pixel", max_pixel), ("domain", max_domain)):
        rate = _number(candidate, f"metric.memorisation_{space}_copy_rate")
        if rate is None:
            return Gate("memorisation", FAIL, f"not audited: no metric.memorisation_{space}_copy_rate tag")
        over = rate > limit
        failed |= over
        parts.append(f"{space} copy rate {rate:.4g} {'>' if over else '<='} {limit:g} (promote.max_copy_rate_{space})")
    return Gate("memorisation", FAIL if failed else PASS, "; ".join(parts))


def downstream_gate(candidate: Mapping[str, str]) -> Gate:
    high = _number(candidate, "downstream.corrected_ci_high")
    if high is None:
        return Gate("downstream", SKIPPED, "no evaluation of this generator recorded (tags downstream.*)")
    low, difference = _number(candidate, "downstream.corrected_ci_low"), _number(candidate, "downstream.difference")
    numbers = (f"{candidate.get('downstream.arm')} vs real-only, {candidate.get('downstream.metric')} difference "
               f"{difference:+.4g}, corrected interval [{low:+.4g}, {high:+.4g}]")
    if high < 0:
        return Gate("downstream", FAIL, f"{numbers}: harm (the whole interval is below 0)")
    said = "helps (the interval is above 0)" if low is not None and low > 0 else "no harm shown (the interval includes 0)"
    return Gate("downstream", PASS, f"{numbers}: {said}")


def evaluate_gates(candidate: Mapping[str, str], champion: Mapping[str, str] | None, rules: PromoteConfig) -> tuple[Gate, ...]:
    compatible = compatibility_gate(candidate, champion)
    quality = (quality_gate(candidate, champion, rules.metric, rules.quality_margin) if compatible.status == PASS
               else Gate("quality", SKIPPED, "not compared: see compatibility"))
    return (compatible, quality, memorisation_gate(candidate, rules.max_copy_rate_pixel, rules.max_copy_rate_domain),
            downstream_gate(candidate))


@dataclass(frozen=True)
class Decision:
    candidate: str  # version number
    champion: str | None  # the version holding @champion before this attempt
    gates: tuple[Gate, ...]
    forced: bool = False
    unchanged: bool = False  # the candidate already holds @champion

    @property
    def outcome(self) -> str:
        if self.unchanged:
            return "unchanged"
        if self.forced:
            return "forced"
        if any(g.status == REFUSED for g in self.gates):
            return "refused"
        return "failed" if any(g.status == FAIL for g in self.gates) else "promoted"

    @property
    def promote(self) -> bool:
        return self.outcome in ("promoted", "forced")

    @property
    def blocking(self) -> list[str]:
        return [g.name for g in self.gates if g.status in (FAIL, REFUSED)]

    def report(self, name: str = REGISTERED_NAME) -> str:
        against = f"champion v{self.champion}" if self.champion else "no champion"
        lines = [f"{name}: v{self.candidate} against {against}"]
        lines += [f"  [{g.status.upper():>7}] {g.name}: {g.detail}" for g in self.gates]
        if self.unchanged:
            lines.append(f"result: v{self.candidate} already holds @{CHAMPION}; nothing to do")
        elif self.outcome == "promoted":
            lines.append(f"result: PROMOTED: v{self.candidate} is @{CHAMPION}"
                         + (f", v{self.champion} is @{PREVIOUS}" if self.champion else ""))
        elif self.forced:
            lines.append(f"result: FORCED: v{self.candidate} is @{CHAMPION} although {', '.join(self.blocking) or 'no gate'} "
                         "did not pass")
        else:
            verb = "REFUSED (not comparable)" if self.outcome == "refused" else "NOT PROMOTED"
            stays = f"@{CHAMPION} stays at v{self.champion}" if self.champion else f"no version holds @{CHAMPION}"
            lines.append(f"result: {verb}: blocked by {', '.join(self.blocking)}; {stays}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Registry operations


def _alias(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _candidate(client: mlflow.MlflowClient, name: str, version: str | None) -> ModelVersion:
    if version is not None:
        try:
            return client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise ValueError(f"--version {version}: {name!r} has no such version in {mlflow.get_tracking_uri()}") from exc
    found = _alias(client, name, CHALLENGER)
    if found is None:
        if not client.search_model_versions(f"name = '{name}'"):
            raise ValueError(f"no registered model {name!r} in {mlflow.get_tracking_uri()} (run train_gan first)")
        raise ValueError(f"{name!r} has no @{CHALLENGER} (train_gan sets it); name a version with --version N")
    return found


def _record_attempt(client: mlflow.MlflowClient, name: str, decision: Decision, rules: PromoteConfig) -> None:
    """Every attempt in the candidate's tags: promotion.<n> (JSON), promotion.last, one tag per gate."""
    version = decision.candidate
    tags = client.get_model_version(name, version).tags
    n = int(tags.get("promotion.attempts", "0")) + 1
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "outcome": decision.outcome,
              "champion": decision.champion, "forced": decision.forced, "rules": vars(rules),
              "gates": {g.name: {"status": g.status, "detail": g.detail} for g in decision.gates}}
    updates = {"promotion.attempts": str(n), f"promotion.{n}": json.dumps(record, sort_keys=True),
               "promotion.last": f"{record['time']}: {decision.outcome}",
               **{f"promotion.gate.{g.name}": f"{g.status}: {g.detail}" for g in decision.gates}}
    if decision.forced:
        updates["promotion.forced"] = (f"{record['time']}: forced to @{CHAMPION} with --force; did not pass: "
                                       f"{', '.join(decision.blocking) or 'none'}")
    for key, value in updates.items():
        client.set_model_version_tag(name, version, key, value)


def promote(rules: PromoteConfig, version: str | None = None, force: bool = False, name: str = REGISTERED_NAME) -> Decision:
    """Judge `version` (default: @challenger) against @champion through the gates; move
    @champion (and @previous-champion) when every gate passes, or with `force`."""
    mlflow_utils.setup()
    client = mlflow.MlflowClient()
    candidate = _candidate(client, name, version)
    holder = _alias(client, name, CHAMPION)
    champion = str(holder.version) if holder else None
    if champion == str(candidate.version):
        return Decision(champion, champion, (), unchanged=True)
    gates = evaluate_gates(candidate.tags, holder.tags if holder else None, rules)
    decision = Decision(str(candidate.version), champion, gates, forced=force and bool(_blocking(gates)))
    _record_attempt(client, name, decision, rules)
    if decision.promote:
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS, champion)
        client.set_model_version_tag(name, decision.candidate, REPLACED_TAG, champion or "")
        client.set_registered_model_alias(name, CHAMPION, decision.candidate)
        if (challenger := _alias(client, name, CHALLENGER)) is not None and str(challenger.version) == decision.candidate:
            client.delete_registered_model_alias(name, CHALLENGER)  # it is the champion now
    if decision.forced:
        print(f"WARNING: --force: {name} v{decision.candidate} is @{CHAMPION} although "
              f"{', '.join(decision.blocking)} did not pass; recorded in its tags (promotion.forced)", file=sys.stderr)
    return decision


def _blocking(gates: tuple[Gate, ...]) -> list[str]:
    return [g.name for g in gates if g.status in (FAIL, REFUSED)]


def rollback(name: str = REGISTERED_NAME) -> tuple[str, str]:
    """Return @champion to @previous-champion; @previous-champion moves to the version that one
    replaced (or is removed). Returns (demoted version, restored version)."""
    mlflow_utils.setup()
    client = mlflow.MlflowClient()
    previous, current = _alias(client, name, PREVIOUS), _alias(client, name, CHAMPION)
    if previous is None or current is None:
        raise ValueError(f"{name!r} has no @{PREVIOUS} to roll back to (a promotion that replaced a champion sets it)")
    restored, demoted = str(previous.version), str(current.version)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.set_registered_model_alias(name, CHAMPION, restored)
    older = previous.tags.get(REPLACED_TAG, "")
    if older and older != demoted:
        client.set_registered_model_alias(name, PREVIOUS, older)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    client.set_model_version_tag(name, demoted, "promotion.rolled_back", f"{stamp}: @{CHAMPION} returned to v{restored}")
    client.set_model_version_tag(name, restored, "promotion.restored", f"{stamp}: @{CHAMPION} again, replacing v{demoted}")
    return demoted, restored
