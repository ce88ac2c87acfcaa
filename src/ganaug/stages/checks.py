"""Cross-stage checks of what the data allows, run before any training."""

from __future__ import annotations

from typing import Any


class StageInputError(ValueError):
    """A stage's inputs do not fit its params; the message names both."""


def require_single_label(meta: dict[str, Any], stage: str) -> None:
    if meta["label_kind"] != "class_index":
        raise StageInputError(
            f"{stage} needs single-label data (class indices), but the prepared data set "
            f"(source {meta['source'].get('name')!r}) is multi-label {meta['class_names']}; "
            "use data.phantom.label_mode=binary or three_class"
        )
