"""Stage `resolve_generator` (always run, in a second or two): pin the generator synthesize will use.

`synthesize.generator: null` writes {"source": "pipeline"} without touching MLflow; a registry URI
(`models:/ganaug-generator@champion`, `models:/ganaug-generator/3`) writes the version it names
now: name, version, run id and the sha256 of its generator file
(`ganaug.tracking.generator_source`). synthesize depends on this file, so it reruns exactly when
the resolved version changes (an alias moved), and not when it stays.
"""

from __future__ import annotations

from ganaug.config import Params
from ganaug.io import write_json
from ganaug.stages import paths
from ganaug.tracking import generator_source


def main(params: Params) -> None:
    uri = params.synthesize.generator
    record = generator_source.PIPELINE if uri is None else generator_source.resolve(uri, "synthesize.generator")
    write_json(paths.RESOLVED_GENERATOR, record)
    print(f"synthesize will use {generator_source.describe(record)}; written to {paths.RESOLVED_GENERATOR}")
