"""Where each stage reads and writes, relative to the project root (DVC runs stages there)."""

from pathlib import Path

PREPARED = Path("data/prepared")  # dataset.npz + meta.json
SYNTHETIC = Path("data/synthetic")  # synthetic.npz + manifest.json
REAL_FEATURES = Path("data/real_features")  # Inception features of the real train split
REFERENCE = Path("models/reference")  # reference classifier + real feature statistics
GAN = Path("models/gan")  # generator.pt, resolved config, figures
RESOLVED_GENERATOR = Path("models/resolved_generator.json")  # the generator synthesize uses (resolve_generator)
METRICS = Path("metrics")
PLOTS = Path("plots")
LEAKAGE_REPORT = Path("reports/leakage")  # every duplicate pair + contact sheet, outside DVC outputs (also on failure)
REPORTS = Path("reports")  # full records beside the DVC metrics summaries (evaluate's)
CACHE = Path(".ganaug")  # resumable checkpoints and feature caches, outside DVC outputs


ARMS = Path("models/arms")  # one folder per arm (a DVC output each): classifiers, test predictions, metrics.json


def arm_dir(arm_id: str) -> Path:
    """models/arms/<arm id>, e.g. models/arms/synthetic-0.5."""
    return ARMS / arm_id
