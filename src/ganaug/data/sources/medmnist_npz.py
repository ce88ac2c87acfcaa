"""Source `medmnist`: any 2D MedMNIST `.npz` (local, or downloaded by the medmnist package).

The official train / val / test split is kept. Multi-label flags (ChestMNIST) give multi-hot
labels. `data.medmnist.classes` selects classes by their `medmnist.INFO` names: on a multi-class
flag it keeps those classes (re-indexed in the given order); on a multi-label flag it makes a
single-label set of "no finding" (all zero) against each listed finding *alone* (the HealthGAN
study's cardiomegaly vs no finding); images with any other finding are left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ganaug.config import DataConfig
from ganaug.data.packed import SPLITS
from ganaug.data.preprocess import preprocess_stack, preprocessing_record, rgb_to_grayscale
from ganaug.data.source_images import DataSourceError, SourceImages, require_classes

NO_FINDING = "no finding"


def medmnist_local_file(cfg: DataConfig) -> Path:
    """The configured .npz, or one downloaded by the medmnist package when no path is given."""
    mcfg = cfg.medmnist
    if mcfg.path is not None:
        path = Path(mcfg.path).expanduser()
        if not path.is_file():
            raise DataSourceError(
                f"data.medmnist.path={mcfg.path!r}: file not found (expected a MedMNIST .npz with "
                "train/val/test _images and _labels arrays)"
            )
        return path
    import medmnist

    if mcfg.flag not in medmnist.INFO:
        raise DataSourceError(f"data.medmnist.flag={mcfg.flag!r}: not a MedMNIST flag (known: {', '.join(sorted(medmnist.INFO))})")
    if mcfg.flag.endswith("3d"):
        raise DataSourceError(f"data.medmnist.flag={mcfg.flag!r} is a 3D volume set; expected a 2D flag")
    root = Path.home() / ".medmnist"
    root.mkdir(parents=True, exist_ok=True)
    data_class = getattr(medmnist, medmnist.INFO[mcfg.flag]["python_class"])
    try:
        data_class(split="train", download=True, size=mcfg.size, root=str(root))
    except Exception as exc:  # medmnist raises bare RuntimeError / URLError on no network
        raise DataSourceError(
            f"could not download MedMNIST {mcfg.flag!r} at size {mcfg.size} ({exc}); "
            "set data.medmnist.path to a local .npz instead"
        ) from exc
    suffix = "" if mcfg.size == 28 else f"_{mcfg.size}"
    return root / f"{mcfg.flag}{suffix}.npz"


def flag_class_names(flag: str) -> list[str] | None:
    """A known MedMNIST flag's class (or finding) names from medmnist.INFO, else None."""
    import medmnist

    names = medmnist.INFO.get(flag, {}).get("label")
    return [names[str(i)] for i in range(len(names))] if names else None


def medmnist_class_names(flag: str, n_classes: int) -> list[str]:
    """Names from medmnist.INFO for a known flag, else class_0, class_1, …"""
    names = flag_class_names(flag)
    if names and len(names) == n_classes:
        return names
    return [f"class_{i}" for i in range(n_classes)]


def _load_arrays(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The six official arrays, images checked and labels as int64 (N, K) (1-D labels are (N, 1) class indices)."""
    try:
        npz = np.load(path)  # allow_pickle=False: an object array is refused, never unpickled
    except Exception as exc:
        raise DataSourceError(f"{str(path)!r} is not a readable .npz file: {exc}") from exc
    with npz:
        expected = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in expected if k not in npz.files]
        if missing:
            raise DataSourceError(
                f"{str(path)!r} lacks MedMNIST arrays {missing} (expected keys {expected}, found {sorted(npz.files)})"
            )
        raw = {}
        for split in SPLITS:
            arrays = []
            for key in (f"{split}_images", f"{split}_labels"):
                try:
                    arrays.append(npz[key])
                except Exception as exc:  # object arrays: "Object arrays cannot be loaded when allow_pickle=False"
                    raise DataSourceError(
                        f"{str(path)!r}: {key} cannot be read ({exc}); expected a numeric array "
                        "(arrays of Python objects are refused: reading them would unpickle code)"
                    ) from exc
            raw[split] = tuple(arrays)
    widths = set()
    for name, (images, labels) in raw.items():
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DataSourceError(
                f"{str(path)!r}: {name}_images has shape {images.shape} dtype {images.dtype}; "
                "expected uint8 (N, H, W) grayscale or (N, H, W, 3)"
            )
        if len(images) == 0:
            raise DataSourceError(
                f"{str(path)!r}: the {name} split is empty ({name}_images has shape {images.shape}); expected "
                "images in train, val and test (a MedMNIST file's official split is kept)"
            )
        labels = _integer_labels(labels, len(images), f"{str(path)!r}: {name}_labels")
        raw[name] = (images, labels)
        widths.add(labels.shape[1])
    if len(widths) > 1:
        raise DataSourceError(f"{str(path)!r}: label widths differ between splits ({sorted(widths)})")
    return raw


def _integer_labels(labels: np.ndarray, n_images: int, where: str) -> np.ndarray:
    """(N,) or (N, K) labels of any numeric dtype -> (N, K) int64; non-integral, NaN or infinite values
    are errors naming `where` and the rows."""
    if labels.ndim == 1:  # a MedMNIST-layout file from elsewhere: class indices
        labels = labels[:, None]
    if labels.ndim != 2 or len(labels) != n_images:
        raise DataSourceError(
            f"{where} has shape {labels.shape}; expected ({n_images},) class indices or ({n_images}, K)"
        )
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise DataSourceError(
                f"{where}: {len(rows)} row(s) with NaN, infinite or non-integer labels (e.g. rows "
                f"{rows[:10].tolist()}: {labels[rows[:3]].tolist()}); expected integer class indices or 0/1 multi-hot"
            )
    elif labels.dtype.kind not in "biu":
        raise DataSourceError(f"{where} has dtype {labels.dtype}; expected integer class indices or 0/1 multi-hot")
    return labels.astype(np.int64)  # before any arithmetic: uint8 255 + 1 would wrap to 0


def count_classes(raw: dict[str, tuple[np.ndarray, np.ndarray]], flag: str, path: Path) -> int:
    """The class (or finding) count, with every label checked against it; errors name the file, split and rows."""
    width = raw["train"][1].shape[1]
    known = flag_class_names(flag)
    where = str(path)
    if width > 1:
        for split, (_, labels) in raw.items():
            odd = np.flatnonzero(((labels != 0) & (labels != 1)).any(axis=1))
            if len(odd):
                raise DataSourceError(
                    f"{where!r}: {split}_labels has {len(odd)} row(s) with values other than 0/1 (e.g. rows "
                    f"{odd[:10].tolist()}); expected multi-hot (N, {width}) labels"
                )
        return width
    for split, (_, labels) in raw.items():
        negative = np.flatnonzero(labels[:, 0] < 0)
        if len(negative):
            raise DataSourceError(
                f"{where!r}: {split}_labels has {len(negative)} negative label(s) (e.g. rows {negative[:10].tolist()}: "
                f"{labels[negative[:3], 0].tolist()}); expected class indices 0, 1, …"
            )
    if known is not None:
        for split, (_, labels) in raw.items():
            beyond = np.flatnonzero(labels[:, 0] >= len(known))
            if len(beyond):
                raise DataSourceError(
                    f"{where!r}: {split}_labels has {len(beyond)} label(s) beyond the class count (e.g. rows "
                    f"{beyond[:10].tolist()}: {labels[beyond[:3], 0].tolist()}); data.medmnist.flag={flag!r} has "
                    f"{len(known)} classes (indices 0..{len(known) - 1}: {known}): set data.medmnist.flag to this "
                    "file's flag, or to a name that is not a MedMNIST flag for classes class_0, class_1, …"
                )
        return len(known)
    n_classes = int(max(labels.max() for _, labels in raw.values())) + 1
    used = set().union(*(np.unique(labels).tolist() for _, labels in raw.values()))
    unused = sorted(set(range(n_classes)) - used)
    if unused:
        raise DataSourceError(
            f"{where!r}: labels run up to {n_classes - 1} but class indices {listing_short(unused)} have no image in "
            f"any split; expected class indices 0..K-1, each with images"
        )
    return n_classes


def listing_short(values: list[int], limit: int = 10) -> str:
    return str(values[:limit])[:-1] + (f", … ({len(values)} in all)]" if len(values) > limit else "]")


def require_each_class_per_split(labels: dict[str, np.ndarray], class_names: list[str], where: str, multilabel: bool) -> None:
    """Each kept split non-empty and, for class labels, every class in every split (the official split is kept)."""
    for split, split_labels in labels.items():
        if len(split_labels) == 0:
            raise DataSourceError(f"{where}: the {split} split keeps no image; expected images in train, val and test")
        if multilabel:
            continue
        counts = np.bincount(split_labels, minlength=len(class_names))
        missing = [name for name, n in zip(class_names, counts) if n == 0]
        if missing:
            named = ", ".join(f"class {name!r}" for name in missing)
            raise DataSourceError(
                f"{where}: {named} {'has' if len(missing) == 1 else 'have'} no images in the {split} split; expected "
                f"every class of {class_names} in train, val and test"
            )


def select_classes(labels: np.ndarray, names: list[str], chosen: list[str] | None, flag: str
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(kept-row mask, new labels, class names) for `data.medmnist.classes` (None: all, unchanged).

    `labels` is (N, 1) class indices or (N, K) multi-hot; `names` are the K (or n_classes) names.
    """
    multilabel = labels.shape[1] > 1
    if chosen is None:
        return np.ones(len(labels), bool), (labels.astype(np.uint8) if multilabel else labels[:, 0].astype(np.int64)), names
    lookup = {n.lower(): i for i, n in enumerate(names)}
    unknown = [c for c in chosen if c.lower() not in lookup]
    if unknown:
        raise DataSourceError(f"data.medmnist.classes: {unknown} not classes of {flag!r} (classes: {names})")
    index = [lookup[c.lower()] for c in chosen]
    if multilabel:  # "no finding" vs each chosen finding alone
        positives = labels.sum(axis=1)
        new = np.full(len(labels), -1, np.int64)
        new[positives == 0] = 0
        for k, column in enumerate(index, start=1):
            new[(positives == 1) & (labels[:, column] == 1)] = k
        return new >= 0, new, [NO_FINDING] + [names[i] for i in index]
    remap = {old: new for new, old in enumerate(index)}
    column = labels[:, 0]
    keep = np.isin(column, index)
    new = np.array([remap.get(int(v), -1) for v in column], np.int64)
    return keep, new, [names[i] for i in index]


def read_medmnist(cfg: DataConfig) -> SourceImages:
    """A MedMNIST `.npz` (official keys), keeping its official train/val/test split."""
    path = medmnist_local_file(cfg)
    raw = _load_arrays(path)
    n_classes = count_classes(raw, cfg.medmnist.flag, path)
    all_names = medmnist_class_names(cfg.medmnist.flag, n_classes)
    images, labels, given, item_ids, kept_counts = [], [], [], [], {}
    class_names = all_names
    for name, (split_images, split_labels) in raw.items():
        keep, new_labels, class_names = select_classes(split_labels, all_names, cfg.medmnist.classes, cfg.medmnist.flag)
        rows = np.flatnonzero(keep)
        if len(rows) == 0:
            raise DataSourceError(
                f"{str(path)!r}: data.medmnist.classes={cfg.medmnist.classes} keeps no image of the {name} split; "
                "expected images in train, val and test"
            )
        kept_counts[name] = {"in_file": len(split_labels), "kept": len(rows)}
        chosen = split_images[rows]
        if chosen.ndim == 4:  # RGB MedMNIST flags: luminance, so the data stays one channel
            chosen = np.stack([rgb_to_grayscale(image) for image in chosen]) if len(chosen) else chosen[..., 0]
        images.append(preprocess_stack(chosen, cfg.image_size, cfg.preprocess))
        labels.append(new_labels[rows])
        given += [name] * len(rows)
        item_ids += [f"{name}[{i}]" for i in rows]
    where = f"{str(path)!r}" + (f" with data.medmnist.classes={cfg.medmnist.classes}" if cfg.medmnist.classes else "")
    multilabel = labels[0].ndim == 2
    require_classes(np.concatenate(labels), class_names, where)
    require_each_class_per_split(dict(zip(raw, labels)), class_names, where, multilabel)
    native = raw["train"][0].shape[1:3]
    source = {
        "name": "medmnist",
        "flag": cfg.medmnist.flag,
        "path": str(path.resolve()),
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "classes": cfg.medmnist.classes,
        "rows": kept_counts,
    }
    preprocessing = preprocessing_record(cfg.preprocess, cfg.image_size, [tuple(native)])
    return SourceImages(
        np.concatenate(images), np.concatenate(labels), class_names, item_ids, source, preprocessing,
        given_split=np.array(given),
    )
