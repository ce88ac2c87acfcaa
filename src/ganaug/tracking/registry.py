"""Promotion in the MLflow model registry: the `champion` alias moves to a generator version
only when it earns it (a lower Fréchet distance in the *same* feature space; distances from
different reference networks or data sets are not comparable)."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from ganaug.tracking import mlflow_utils
from ganaug.tracking.pyfunc_generator import REGISTERED_NAME

LOWER_IS_BETTER = {"fd_domain": True, "fid_inception": True, "ssim_real_fake": False}


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate: dict[str, str], champion: dict[str, str] | None, metric: str) -> Decision:
    """Compare two model versions' tags (`metric.<name>`, `feature_extractor`)."""
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"--metric {metric!r}: expected one of {sorted(LOWER_IS_BETTER)}")
    key = f"metric.{metric}"
    if key not in candidate:
        return Decision(False, f"the candidate has no {metric} (tag {key})")
    if champion is None:
        return Decision(True, "there is no champion yet")
    if champion.get("feature_extractor") != candidate.get("feature_extractor") and metric != "fid_inception":
        return Decision(
            False,
            f"{metric} values come from different feature extractors (candidate "
            f"{candidate.get('feature_extractor')}, champion {champion.get('feature_extractor')}) and are "
            "not comparable; use --force to promote anyway",
        )
    if key not in champion:
        return Decision(True, f"the champion has no {metric}")
    new, old = float(candidate[key]), float(champion[key])
    better = new < old if LOWER_IS_BETTER[metric] else new > old
    verdict = "better" if better else "not better"
    return Decision(better, f"{metric} {new:.4g} vs champion {old:.4g}: {verdict}")


def promote(version: str | None = None, metric: str = "fd_domain", alias: str = "champion", force: bool = False,
            name: str = REGISTERED_NAME) -> Decision:
    """Move `alias` to `version` (default: the newest) if it beats the current holder."""
    mlflow_utils.setup()
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise ValueError(f"no registered model {name!r} in {mlflow.get_tracking_uri()} (run train_gan first)")
    if version is None:
        candidate = max(versions, key=lambda v: int(v.version))
    else:
        matches = [v for v in versions if str(v.version) == str(version)]
        if not matches:
            raise ValueError(f"--version {version}: {name!r} has versions {sorted(int(v.version) for v in versions)}")
        candidate = matches[0]
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    if holder is not None and str(holder.version) == str(candidate.version):
        return Decision(False, f"version {candidate.version} already holds @{alias}")
    decision = Decision(True, "forced") if force else decide(candidate.tags, holder.tags if holder else None, metric)
    client.set_model_version_tag(name, candidate.version, f"promotion.{alias}", decision.reason)
    if decision.promote:
        client.set_registered_model_alias(name, alias, candidate.version)
    return decision
