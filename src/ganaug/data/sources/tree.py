"""Walking a class-per-folder tree, with or without split folders above the class folders.

    root/NORMAL/a.jpeg                      class folders
    root/train/NORMAL/a.jpeg, root/test/…   split folders (train/val/test, Training/Testing, …)

Files are found recursively under each class folder (symlinks followed) and sorted, so the
order, and with it every split, is the same on every machine. Hidden files (".DS_Store") are
ignored and counted; any other file outside a class folder, or with an extension not in the
accepted list, is a bad file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ganaug.data.source_images import SPLIT_FOLDER_NAMES, BadFile, DataSourceError


@dataclass(frozen=True)
class TreeFile:
    path: Path
    rel: str  # relative to the root, "/"-separated
    class_dir: str
    split: str | None  # "train" / "val" / "test" from a split folder, or None


@dataclass
class ClassTree:
    files: list[TreeFile]
    class_dirs: list[str]  # sorted
    has_split_folders: bool
    bad: list[BadFile] = field(default_factory=list)
    hidden_ignored: int = 0


def _visible(entries: list[Path]) -> tuple[list[Path], int]:
    shown = [e for e in entries if not e.name.startswith(".")]
    return shown, len(entries) - len(shown)


def walk_class_tree(root: str, splits: str, key: str, extensions: list[str]) -> ClassTree:
    """Files of a class-folder tree; `key` names the params section in errors (data.folders)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataSourceError(f"{key}.root={root!r}: not a directory (expected a class-per-folder tree)")
    top, hidden = _visible(sorted(base.iterdir()))
    top_dirs = [d for d in top if d.is_dir()]
    split_dirs = [d for d in top_dirs if d.name.lower() in SPLIT_FOLDER_NAMES]
    if split_dirs and len(split_dirs) != len(top_dirs):
        others = [d.name for d in top_dirs if d not in split_dirs]
        raise DataSourceError(
            f"{key}.root={root!r} mixes split folders {[d.name for d in split_dirs]} with other folders "
            f"{others}; expected only split folders (train/val/test) or only class folders"
        )
    has_splits = bool(split_dirs)
    if splits == "keep" and not has_splits:
        raise DataSourceError(
            f"{key}.splits=keep but {root!r} has no split folders (expected train/val/test, "
            "Training/Testing, …, each holding the class folders)"
        )
    tree = ClassTree([], [], has_splits, hidden_ignored=hidden)
    if has_splits:
        seen: dict[str, str] = {}
        for split_dir in split_dirs:
            split = SPLIT_FOLDER_NAMES[split_dir.name.lower()]
            if split in seen:
                raise DataSourceError(
                    f"{key}.root={root!r}: folders {seen[split]!r} and {split_dir.name!r} are both the {split} split"
                )
            seen[split] = split_dir.name
            _walk_classes(base, split_dir, split, extensions, tree)
    else:
        _walk_classes(base, base, None, extensions, tree)
    if not tree.files and not tree.bad:
        raise DataSourceError(f"{key}.root={root!r}: no image files found in class folders")
    tree.files.sort(key=lambda f: f.rel)
    tree.class_dirs = sorted({f.class_dir for f in tree.files})
    return tree


def _walk_classes(base: Path, parent: Path, split: str | None, extensions: list[str], tree: ClassTree) -> None:
    entries, hidden = _visible(sorted(parent.iterdir()))
    tree.hidden_ignored += hidden
    for entry in entries:
        rel = entry.relative_to(base).as_posix()
        if not entry.is_dir():
            tree.bad.append(BadFile(rel, "not inside a class folder"))
            continue
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    tree.hidden_ignored += 1
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(base).as_posix()
                if path.suffix.lower() not in extensions:
                    tree.bad.append(BadFile(rel, f"extension {path.suffix or '(none)'!r} is not one of {extensions}"))
                    continue
                tree.files.append(TreeFile(path, rel, entry.name, split))


def images_per_split_folder(files: list[TreeFile], labels: list[int], class_names: list[str]) -> dict[str, dict[str, int]]:
    """{split folder or "all": {class: images}}, as read (before any split or leakage drop)."""
    counts: dict[str, dict[str, int]] = {}
    for f, label in zip(files, labels):
        per_class = counts.setdefault(f.split or "all", dict.fromkeys(class_names, 0))
        per_class[class_names[label]] += 1
    return counts


def count_values(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
