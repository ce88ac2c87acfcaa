"""The project's `.pt` files (generator, classifier, GAN checkpoint): tensors and plain values
only, saved atomically and loaded with `torch.load(..., weights_only=True)`, so a swapped or
tampered file cannot run code. A file that cannot be read raises `BadFileError`, one line
naming the file and what was expected.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganaug.io import atomic_file


TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy torch file or pickle (protocol >= 2)


class BadFileError(ValueError):
    """A file the project reads is empty, damaged, refused by the safe loader, or of another layout."""


def _reason(exc: BaseException) -> str:
    """The telling line of a torch.load error (its messages run to several paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, pickle.UnpicklingError) and lines and lines[0].startswith("Weights only load failed"):
        # e.g. "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
        telling = [line for line in lines[1:] if "GLOBAL" in line or line.startswith("Unsupported")]
        return telling[0] if telling else "a pickled Python object"
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def summary(exc: BaseException, limit: int = 240) -> str:
    """An exception's first two lines as one (load_state_dict puts the telling part on line 2)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_torch_file(path: Path, what: str, expected: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; `what` names the file's role
    ("generator file"), `expected` what it should be. Errors are `BadFileError`s naming both."""
    if path.stat().st_size == 0:
        raise BadFileError(f"{what} {str(path)!r} is empty (0 bytes); expected {expected}")
    with path.open("rb") as f:
        start = f.read(8)
    if not start.startswith(TORCH_FILE_STARTS):
        raise BadFileError(f"{what} {str(path)!r} is not a torch file (it starts with {start!r}); expected {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise BadFileError(f"{what} {str(path)!r} is not a torch file ({_reason(exc)}); expected {expected}") from exc
        raise BadFileError(
            f"{what} {str(path)!r} holds pickled objects that the safe (weights-only) loader refuses ({_reason(exc)}); "
            f"nothing in it was run. It was not written by ganaug, or was altered: expected {expected}"
        ) from exc
    except Exception as exc:  # torch reports damage as RuntimeError, EOFError, KeyError…: one message for all
        raise BadFileError(
            f"{what} {str(path)!r} is not a readable torch file ({_reason(exc)}; truncated, or not written by "
            f"torch.save); expected {expected}"
        ) from exc


def require_fields(blob: Any, path: Path, what: str, expected: str, fields: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """`blob` as a dict holding each of `fields` with its type; else `BadFileError` naming the keys."""
    if not isinstance(blob, dict):
        raise BadFileError(f"{what} {str(path)!r} holds a {type(blob).__name__}, not a dict; expected {expected}")
    missing = [key for key in fields if key not in blob]
    if missing:
        raise BadFileError(f"{what} {str(path)!r} lacks keys {missing}; expected {expected}")
    wrong = [f"{key!r} is {type(blob[key]).__name__}" for key, kind in fields.items() if not isinstance(blob[key], kind)]
    if wrong:
        raise BadFileError(f"{what} {str(path)!r} has values of the wrong type ({', '.join(wrong)}); expected {expected}")
    return blob


def plain(value: Any, where: str = "value") -> Any:
    """`value` as what a weights-only load accepts: tensors (moved to the CPU), dicts, lists,
    tuples, str, int, float, bool, None; NumPy scalars become Python numbers and Paths str.
    Anything else (an object that would need its class to load) is a TypeError."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float, but pickles as a NumPy object
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        items = {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
        if not isinstance(value, OrderedDict):
            return items
        ordered = OrderedDict(items)  # a module's state_dict: keep its per-module versions (_metadata)
        if hasattr(value, "_metadata"):
            ordered._metadata = plain(value._metadata, f"{where}._metadata")
        return ordered
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise TypeError(f"{where} is a {type(value).__name__}: only tensors and plain values go into a .pt file")


def save_torch_file(blob: dict[str, Any], path: str | Path) -> None:
    """Write `blob` (made `plain`) atomically with torch.save."""
    with atomic_file(path) as tmp:
        torch.save(plain(blob, "file content"), tmp)
