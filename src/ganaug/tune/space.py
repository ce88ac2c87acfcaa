"""`tune.gan_space` and `tune.mixing_space` (validated at load by `ganaug.config`) as Optuna suggestions.

Optuna's categorical choices must be None/bool/int/float/str, so a list-valued choice
(`gan.augment_policy`) is suggested as its ops joined by "+" and split back here.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import optuna

from ganaug.config import MIXING_KEYS, GANConfig, SearchRange

LIST_JOIN = "+"


def _encode(value: Any) -> Any:
    return LIST_JOIN.join(value) if isinstance(value, list) else value


def _decode(name: str, value: Any) -> Any:
    if typing.get_origin(typing.get_type_hints(GANConfig)[name]) is list:
        return value.split(LIST_JOIN) if isinstance(value, str) else list(value)
    return value


def suggest_gan(trial: optuna.Trial, space: dict[str, SearchRange]) -> dict[str, Any]:
    """{gan key: value} sampled for `trial`, typed as the gan section types them."""
    hints = typing.get_type_hints(GANConfig)
    values: dict[str, Any] = {}
    for name, entry in space.items():
        if entry.choices is not None:
            choice = trial.suggest_categorical(name, [_encode(c) for c in entry.choices])
            value = _decode(name, choice)
            values[name] = float(value) if hints[name] is float and not isinstance(value, bool) else value
        elif hints[name] is int:
            values[name] = trial.suggest_int(name, int(entry.low), int(entry.high), log=entry.log)
        else:
            values[name] = trial.suggest_float(name, float(entry.low), float(entry.high), log=entry.log)
    return values


def params_to_gan(params: dict[str, Any]) -> dict[str, Any]:
    """A finished trial's `params` (as Optuna stores them) as gan values."""
    hints = typing.get_type_hints(GANConfig)
    return {name: (float(v) if hints[name] is float and not isinstance(v, bool) else _decode(name, v))
            for name, v in params.items()}


def trial_gan_config(gan: GANConfig, sampled: dict[str, Any], seed: int, epochs: int | None) -> GANConfig:
    """The gan section with the sampled values, the trial's seed and the study's epochs."""
    return dataclasses.replace(gan, **sampled, seed=seed, epochs=epochs or gan.epochs)


def space_as_dict(space: dict[str, SearchRange]) -> dict[str, dict[str, Any]]:
    """The space as plain data (stored with the study, logged to MLflow)."""
    return {name: {k: v for k, v in dataclasses.asdict(entry).items() if v is not None and v is not False}
            for name, entry in sorted(space.items())}


def suggest_mixing(trial: optuna.Trial, space: dict[str, SearchRange], synthesize_filter: str) -> dict[str, Any]:
    """{mixing key: value} sampled for `trial` (keys of `ganaug.config.MIXING_KEYS`).

    filter_threshold is suggested only when the trial's filter (sampled, else `synthesize_filter`)
    is not "none": a threshold means nothing without a filter, and Optuna's define-by-run space
    leaves it out of such trials rather than recording a value that had no effect."""
    values: dict[str, Any] = {}
    for name, entry in space.items():
        if name == "filter_threshold":
            continue
        values[name] = _suggest_mixing_value(trial, name, entry)
    if "filter_threshold" in space and values.get("filter", synthesize_filter) != "none":
        values["filter_threshold"] = _suggest_mixing_value(trial, "filter_threshold", space["filter_threshold"])
    return values


def _suggest_mixing_value(trial: optuna.Trial, name: str, entry: SearchRange) -> Any:
    tp = MIXING_KEYS[name][0]
    if entry.choices is not None:
        value = trial.suggest_categorical(name, list(entry.choices))
        return float(value) if tp is float else value
    return trial.suggest_float(name, float(entry.low), float(entry.high), log=entry.log)


def params_to_mixing(params: dict[str, Any]) -> dict[str, Any]:
    """A finished mixing trial's `params` (as Optuna stores them) as mixing values."""
    return {name: float(v) if MIXING_KEYS[name][0] is float else v for name, v in params.items()}
