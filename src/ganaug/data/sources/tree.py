"""Walking a class-per-folder tree, with or without split folders above the class folders.

    root/NORMAL/a.jpeg                      class folders
    root/train/NORMAL/a.jpeg, root/test/…   split folders (train/val/test, Training/Testing, …)

Files are found recursively under each class folder and sorted, so the order, and with it every
split, is the same on every machine. Links are followed, but each real folder is walked once: the
real (non-link) tree first, then the links in sorted order, so a link to a folder already walked (a
loop, or a second way into the same folder) is a bad entry instead of a copy of that folder's images.
A file link or hard link to a file already listed stays (DVC's symlink / hardlink caches share one
file among identical images) and is counted; in another class it is a bad file (two labels).
Only regular files are read: a FIFO, socket or device (which would hang or never end) and a broken
link are bad files. Hidden names (".DS_Store", ".ipynb_checkpoints/" with everything in it) are
ignored and counted. Any other file outside a class folder, or with an extension not in the accepted
list, is a bad file; a class folder without any file is an error.

Names shown in messages and meta.json (`ClassTree.shown`): the path relative to the root, or with
data.redact_paths `<class folder>/#<k>`, k counting from 0 in the sorted relative paths of what was
found under that class folder (hidden names left out), so that no file or subfolder name (which may
carry a patient's name or record number) is written.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ganaug.data.readers import not_regular
from ganaug.data.source_images import REDACTED_NAMES, SPLIT_FOLDER_NAMES, BadFile, DataSourceError


@dataclass(frozen=True)
class Found:
    path: Path
    rel: str  # relative to the walk's base, "/"-separated, through links as found
    owner: str  # rel of the class folder it is in ("" / a split folder for entries outside class folders)
    problem: str | None = None  # why it cannot be read; None for a regular file
    same_as: str | None = None  # rel of what was first reached by another path (a folder, or a file in another class)


class FileWalk:
    """Regular files under folders; links followed, each real folder walked once."""

    def __init__(self, base: Path):
        self.base = base
        self.found: list[Found] = []
        self.hidden_files = 0  # hidden files, and every file inside hidden folders
        self.hidden_folders = 0
        self.files_sharing_a_real_file = 0  # file links / hard links to a file already listed
        self._folders: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> rel of its first walk
        self._files: dict[tuple[int, int], Found] = {}
        self._links: list[tuple[Path, str]] = []  # (link, owner) waiting for follow_links

    def rel(self, path: Path) -> str:
        return path.relative_to(self.base).as_posix()

    def add_folder(self, folder: Path, owner: str) -> None:
        """Walk one folder's real tree; links inside it wait for `follow_links`."""
        try:
            st = os.stat(folder)
        except OSError as exc:
            self.found.append(Found(folder, self.rel(folder), owner, f"cannot be read ({exc.strerror})"))
            return
        if not self._claim_folder(folder, st, owner):
            return
        stack = [folder]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                self.found.append(Found(current, self.rel(current), owner, f"cannot list this folder ({exc.strerror})"))
                continue
            subfolders = []
            for entry in entries:
                path = Path(entry.path)
                if entry.name.startswith("."):
                    self.count_hidden(entry)
                elif entry.is_symlink():
                    self.queue_link(path, owner)
                else:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        if self._claim_folder(path, st, owner):
                            subfolders.append(path)
                    else:
                        self.add_file(path, st, owner)
            stack.extend(reversed(subfolders))

    def follow_links(self) -> None:
        """Follow the links met so far (and those met behind them), in sorted order."""
        while self._links:
            pending, self._links = sorted(self._links, key=lambda link: link[0].as_posix()), []
            for path, owner in pending:
                try:
                    st = os.stat(path)
                except OSError as exc:
                    why = {errno.ENOENT: "a broken link (its target does not exist)",
                           errno.ELOOP: "a link loop (the link points back to itself)"}.get(
                        exc.errno, f"a link that cannot be followed ({exc.strerror})")
                    self.found.append(Found(path, self.rel(path), owner, why))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    self.add_folder(path, owner)
                else:
                    self.add_file(path, st, owner)

    def claim(self, folder: Path) -> None:
        """Mark a folder as walked without listing it (the root, a split folder)."""
        st = os.stat(folder)
        self._folders.setdefault((st.st_dev, st.st_ino), self.rel(folder))

    def queue_link(self, path: Path, owner: str) -> None:
        self._links.append((path, owner))

    def count_hidden_in(self, folder: Path) -> None:
        """Count the hidden names directly in `folder` (its other entries are walked elsewhere)."""
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name.startswith("."):
                    self.count_hidden(entry)

    def _claim_folder(self, folder: Path, st: os.stat_result, owner: str) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in self._folders:
            self.found.append(Found(folder, self.rel(folder), owner, "a link to a folder already walked (not walked again)",
                                    self._folders[key]))
            return False
        self._folders[key] = self.rel(folder)
        return True

    def add_file(self, path: Path, st: os.stat_result, owner: str) -> None:
        rel = self.rel(path)
        if not stat.S_ISREG(st.st_mode):
            self.found.append(Found(path, rel, owner, not_regular(st.st_mode)))
            return
        key = (st.st_dev, st.st_ino)
        first = self._files.get(key)
        if first is None:
            self._files[key] = Found(path, rel, owner)
        else:
            self.files_sharing_a_real_file += 1
            if first.owner != owner:
                self.found.append(Found(path, rel, owner, "the same file (a link) as one in another class folder",
                                        first.rel))
                return
        self.found.append(Found(path, rel, owner))

    def count_hidden(self, entry: os.DirEntry) -> None:
        if entry.is_dir(follow_symlinks=False):
            self.hidden_folders += 1
            for _, _, filenames in os.walk(entry.path):  # links not followed: counted, never read
                self.hidden_files += len(filenames)
        else:
            self.hidden_files += 1


def shown_names(found: list[Found], redact: bool) -> dict[str, str]:
    """rel -> the name messages and meta.json use: rel itself, or `<owner>/#<k>` when redacted."""
    if not redact:
        return {f.rel: f.rel for f in found}
    by_owner: dict[str, list[str]] = {}
    for f in found:
        by_owner.setdefault(f.owner, []).append(f.rel)
    names = {}
    for owner, rels in by_owner.items():
        for k, rel in enumerate(sorted(set(rels) - {owner})):
            names[rel] = f"{owner}/#{k}" if owner else f"#{k}"
        if owner in rels:  # the class folder itself (a second link to a folder): its name is not a file name
            names[owner] = owner
    return names


@dataclass(frozen=True)
class TreeFile:
    path: Path
    rel: str  # relative to the root, "/"-separated
    class_dir: str
    split: str | None  # "train" / "val" / "test" from a split folder, or None
    shown: str = ""  # rel, or its anonymous name with data.redact_paths


@dataclass
class ClassTree:
    files: list[TreeFile]
    class_dirs: list[str]  # sorted
    has_split_folders: bool
    bad: list[BadFile] = field(default_factory=list)
    hidden_ignored: int = 0
    hidden_folders_ignored: int = 0
    files_sharing_a_real_file: int = 0
    names: dict[str, str] = field(default_factory=dict)  # rel -> shown

    def shown(self, rel: str) -> str:
        return self.names.get(rel, rel)


def walk_class_tree(root: str, splits: str, key: str, extensions: list[str], redact: bool = False) -> ClassTree:
    """Files of a class-folder tree; `key` names the params section in errors (data.folders)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataSourceError(f"{key}.root={root!r}: not a directory (expected a class-per-folder tree)")
    top = [e for e in sorted(base.iterdir()) if not e.name.startswith(".")]
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
    walk = FileWalk(base)
    walk.claim(base)  # a link back to the root is a folder already walked
    class_folders: dict[str, tuple[str, str | None]] = {}  # class folder rel -> (class name, split)
    parents: list[tuple[Path, str | None]] = [(base, None)]
    if has_splits:
        walk.count_hidden_in(base)
        seen: dict[str, str] = {}
        parents = []
        for split_dir in split_dirs:
            split = SPLIT_FOLDER_NAMES[split_dir.name.lower()]
            if split in seen:
                raise DataSourceError(
                    f"{key}.root={root!r}: folders {seen[split]!r} and {split_dir.name!r} are both the {split} split"
                )
            seen[split] = split_dir.name
            walk.claim(split_dir)
            parents.append((split_dir, split))
    linked = []
    for parent, split in parents:
        for folder in _class_folders(walk, parent):
            class_folders[walk.rel(folder)] = (folder.name, split)
            if folder.is_symlink():
                linked.append(folder)
            else:
                walk.add_folder(folder, walk.rel(folder))
    for folder in linked:  # after every real class folder, so that a real folder is walked as itself
        walk.add_folder(folder, walk.rel(folder))
    walk.follow_links()
    _require_files_in(class_folders, walk.found, key, root)
    names = shown_names(walk.found, redact)

    def show(rel: str) -> str | None:
        return rel if not redact or rel in class_folders else names.get(rel)

    tree = ClassTree([], sorted({name for name, _ in class_folders.values()}), has_splits, names=names,
                     hidden_ignored=walk.hidden_files, hidden_folders_ignored=walk.hidden_folders,
                     files_sharing_a_real_file=walk.files_sharing_a_real_file)
    for f in sorted(walk.found, key=lambda f: f.rel):
        shown = names[f.rel]
        if f.problem is not None:
            first = show(f.same_as) if f.same_as is not None else None
            tree.bad.append(BadFile(shown, f.problem + (f"; first reached as {first}" if first else "")))
        elif f.owner not in class_folders:
            tree.bad.append(BadFile(shown, "not inside a class folder"))
        elif f.path.suffix.lower() not in extensions:
            tree.bad.append(BadFile(shown, f"extension {f.path.suffix or '(none)'!r} is not one of {extensions}"))
        else:
            class_dir, split = class_folders[f.owner]
            tree.files.append(TreeFile(f.path, f.rel, class_dir, split, shown))
    if not tree.files and not tree.bad:
        raise DataSourceError(f"{key}.root={root!r}: no image files found in class folders")
    return tree


def _class_folders(walk: FileWalk, parent: Path) -> list[Path]:
    """The class folders under `parent` (the root or a split folder); any other entry there is found
    with `parent` as its owner, i.e. outside any class folder."""
    owner = walk.rel(parent) if parent != walk.base else ""
    folders = []
    with os.scandir(parent) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            walk.count_hidden(entry)
        elif entry.is_dir():  # follows a link: a linked class folder is a class folder
            folders.append(path)
        elif entry.is_symlink():
            walk.queue_link(path, owner)
        else:
            walk.add_file(path, entry.stat(follow_symlinks=False), owner)
    return folders


def _require_files_in(class_folders: dict[str, tuple[str, str | None]], found: list[Found], key: str, root: str) -> None:
    """A class folder without any file is an error, not a class that silently disappears."""
    holding = {f.owner for f in found}
    empty = [rel for rel in class_folders if rel not in holding]
    if empty:
        raise DataSourceError(
            f"{key}.root={root!r}: class folder(s) {empty} hold no files (hidden names aside); expected image "
            "files in every class folder (remove a folder whose class is not meant to be there)"
        )


def tree_record(tree: ClassTree, redact: bool) -> dict:
    """What meta.json says about the walk: hidden names, links, how files are named."""
    return {
        "hidden_files_ignored": tree.hidden_ignored,
        "hidden_folders_ignored": tree.hidden_folders_ignored,
        "files_sharing_a_real_file": tree.files_sharing_a_real_file,
        "redact_paths": redact,
        **({"file_names": REDACTED_NAMES} if redact else {}),
    }


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
