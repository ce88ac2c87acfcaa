"""`ganaug <stage>`: one subcommand per pipeline stage, each reading params.yaml.

`--dry-run` prints the resolved sections a stage reads and exits without touching data.
Errors in params or inputs print one line naming the key or file; GANAUG_DEBUG=1 shows tracebacks.
The whole params file is validated before a stage module (and torch) is imported, so `--help`
and a params typo cost a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ganaug.config import ConfigError, Params, dump_yaml, load_params

# stage -> (params sections it reads, module with main(params, ...))
STAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "prepare": (("data",), "ganaug.stages.prepare"),
    "train-reference": (("reference", "classifier", "tracking"), "ganaug.stages.train_reference"),
    "real-features": (("quality",), "ganaug.stages.real_features"),
    "train-gan": (("gan", "quality", "tracking"), "ganaug.stages.train_gan"),
    "resolve-generator": (("synthesize",), "ganaug.stages.resolve_generator"),  # reads synthesize.generator
    "synthesize": (("synthesize",), "ganaug.stages.synthesize"),
    "train-classifier": (("classifier", "arms", "tracking"), "ganaug.stages.train_classifier"),
    "evaluate": (("evaluate", "arms"), "ganaug.stages.evaluate"),
    "report": ((), "ganaug.stages.report"),  # reads no params: the pipeline's outputs only
}


def _run_stage(name: str, params: Params, args: argparse.Namespace) -> None:
    import importlib

    module = importlib.import_module(STAGES[name][1])
    if name == "train-classifier":
        module.main(params, args.arm)
    else:
        module.main(params)


def _add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """`ganaug quality` options (run by `ganaug.quality.compare.main`, imported only to run)."""
    parser.add_argument("--real", required=True, help="packed dataset dir (train split), synthetic dir or .npz")
    parser.add_argument("--fake", required=True, help="synthetic dir, packed dataset dir or .npz")
    parser.add_argument("--real-split", default="train", choices=("train", "val"))
    parser.add_argument("--reference", default="models/reference", help="train_reference output (domain features); skipped if absent")
    parser.add_argument("--inception-weights", default=None, help="pytorch-fid weights file (default: torch hub cache if present)")
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--json", default="quality.json", help="where to write the report (default: quality.json)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected at least 1")
    return value


def _add_tune_parser(sub: argparse._SubParsersAction) -> None:
    """`ganaug tune gan|mixing | show gan|mixing | apply gan|mixing` (run by `ganaug.stages.tune_gan`
    and `ganaug.stages.tune_mixing`)."""
    tune = sub.add_parser("tune", help="hyperparameter studies with Optuna (README \"Hyperparameter studies\")")
    actions = tune.add_subparsers(dest="tune_action", required=True)
    gan = actions.add_parser("gan", help="run or resume the GAN study (params: tune, gan)")
    mixing = actions.add_parser("mixing", help="run or resume the mixing study with a fixed generator "
                                               "(params: tune, classifier, synthesize)")
    show = actions.add_parser("show", help="best trials, param importances, pruned fraction (mixing: the final test)")
    apply = actions.add_parser("apply", help="the best trial's params as a `dvc exp run -S ...` (printed; --run runs "
                                             "it); mixing: first its one test evaluation against real-only")
    for p in (show, apply):
        p.add_argument("kind", choices=("gan", "mixing"), help="which study")
    for p in (gan, mixing, show, apply):
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.add_argument("--study", default=None, help="study name (default: gan or mixing)")
        p.add_argument("--storage", default=None, help="overrides tune.storage: journal:<file>, sqlite:////abs.db, "
                                                       "postgresql+psycopg2://user@host/db")
    for run in (gan, mixing):
        run.add_argument("--trials", type=_positive_int, default=None, help="overrides tune.n_trials (total budget)")
        run.add_argument("--timeout", type=float, default=None, help="overrides tune.timeout (seconds; 0 = none)")
        run.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default: 1)")
        run.add_argument("--worker-index", type=int, default=0, help="this worker's index: seeds its sampler (give "
                                                                     "each shell its own when starting workers by hand)")
        run.add_argument("--dry-run", action="store_true", help="print the resolved params the study reads and exit")
    mixing.add_argument("--final", action="store_true", help="after the search, evaluate the best trial once on the "
                                                             "test split against real-only (as `tune apply mixing`)")
    apply.add_argument("--trial", type=int, default=None, help="a complete trial's number (default: the best)")
    apply.add_argument("--run", action="store_true", help="run the command (default: print it)")


def _tune(args: argparse.Namespace) -> int:
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"ganaug tune: params error: {exc}", file=sys.stderr)
        return 2
    kind = getattr(args, "kind", args.tune_action)  # tune gan|mixing, or show/apply <kind>
    if args.study is None:
        args.study = kind
    if getattr(args, "dry_run", False):
        sections = ("tune", "gan") if kind == "gan" else ("tune", "classifier", "synthesize")
        print(dump_yaml({s: getattr(params, s) for s in sections}), end="")
        return 0
    try:
        if kind == "gan":
            from ganaug.stages import tune_gan as module
        else:
            from ganaug.stages import tune_mixing as module
        action = {"gan": module.main, "mixing": module.main, "show": module.show, "apply": module.apply}[args.tune_action]
        if args.tune_action in ("gan", "mixing"):  # both studies' launch arguments, checked before any input is read
            if args.workers < 1:
                raise ValueError(f"--workers {args.workers}: expected at least 1 worker process")
            if not args.study.strip():
                raise ValueError("--study '': expected a study name")
        return action(params, args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("GANAUG_DEBUG"):
            raise
        print(f"ganaug tune {args.tune_action}: error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganaug", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (sections, _) in STAGES.items():
        p = sub.add_parser(name, help=f"run the {name.replace('-', '_')} stage (reads params: {', '.join(sections) or 'none'})")
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.add_argument("--dry-run", action="store_true", help="print the resolved params this stage reads and exit")
        if name == "train-classifier":
            p.add_argument("--arm", required=True, help="arm id, as in models/arms/<id>: real, balanced, classic, "
                           "<family>-<ratio> (e.g. synthetic-0.5), synthetic_only; the params' arms section lists them")
    p = sub.add_parser("quality", help="all quality metrics of one image set against another (table + JSON)")
    _add_quality_arguments(p)
    _add_tune_parser(sub)
    p = sub.add_parser("promote", help="move @champion to the challenger if it passes every gate (params: promote)",
                       description="Judge a generator version (default: @challenger) against @champion through the gates "
                                   "compatibility, quality, memorisation and downstream; @champion moves only when every "
                                   "gate passes. Exit status: 0 promoted (or forced, rolled back, unchanged), 3 not promoted.")
    p.add_argument("--params", default="params.yaml", help="params file with the promote section (default: params.yaml)")
    p.add_argument("--version", help="model version to judge (default: the one holding @challenger)")
    p.add_argument("--force", action="store_true", help="move @champion even if gates fail or refuse (recorded in its tags)")
    p.add_argument("--rollback", action="store_true", help="return @champion to @previous-champion")
    p = sub.add_parser("exp", help="one DVC experiment from a preset (presets/*.yaml) and/or -S overrides, validated first")
    p.add_argument("--preset", help="params overlay: only the keys that differ from params.yaml")
    p.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="one more params change, as dvc exp run -S takes it (repeatable)")
    p.add_argument("-n", "--name", help="experiment name (dvc exp run -n)")
    p.add_argument("--params", default="params.yaml", help="params file the preset is laid over (default: params.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the dvc exp run command and exit")
    p = sub.add_parser("preset", help="a published study's setup (presets/published/NAME.yaml) as DVC experiments "
                                      "(README \"Published studies, re-tested\")",
                       description="Run a published study's preset: params.yaml + presets/published/NAME.yaml + any "
                                   "-S overrides, validated whole and its data checked before DVC starts, then one "
                                   "`dvc exp run` (one per value when the preset sweeps a key). --table prints the "
                                   "results of its experiments from DVC.")
    p.add_argument("name", nargs="?", help="preset name (bin/ganaug preset --list shows them)")
    p.add_argument("--list", action="store_true", help="list the published presets and the data each expects")
    p.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="one more params change over the preset, as dvc exp run -S takes it (repeatable)")
    p.add_argument("--sweep", metavar="'[V1, V2]'", help="replace the preset's sweep values (a YAML list)")
    p.add_argument("-n", "--name", dest="exp_name", help="experiment name (default: the preset's; a sweep adds -<value>)")
    p.add_argument("--table", action="store_true", help="print the results of the preset's experiments "
                                                        "(DVC's metrics and each synthetic set's memorisation audit)")
    p.add_argument("--params", default="params.yaml", help="params file whose committed version the preset is laid "
                                                           "over, put back before each run (default: params.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the dvc exp run commands and exit")
    return parser


def _preset(args: argparse.Namespace) -> int:
    from ganaug import presets

    try:
        if args.list:
            print(presets.list_presets(), end="")
            return 0
        if not args.name:
            raise ConfigError("give a preset NAME (bin/ganaug preset --list shows them)")
        if args.table:
            print(presets.results_table(args.name, args.exp_name), end="")
            return 0
        return presets.run_preset(args.name, args.overrides, args.sweep, args.exp_name, args.dry_run, args.params)
    except ConfigError as exc:
        print(f"ganaug preset: params error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("GANAUG_DEBUG"):
            raise
        print(f"ganaug preset: error: {exc}", file=sys.stderr)
        return 1


def _promote(args: argparse.Namespace) -> int:
    from ganaug.tracking import registry

    if args.rollback:
        if args.force or args.version:
            raise ValueError("--rollback takes neither --version nor --force")
        demoted, restored = registry.rollback()
        print(f"{registry.REGISTERED_NAME}: rolled back: v{restored} is @{registry.CHAMPION} again (v{demoted} no longer)")
        return 0
    decision = registry.promote(load_params(args.params).promote, args.version, args.force)
    print(decision.report())
    return 0 if decision.promote or decision.unchanged else 3


def main(argv: list[str] | None = None, run: Callable[[str, Params, argparse.Namespace], None] = _run_stage) -> int:
    args = build_parser().parse_args(argv)
    if args.stage == "tune":
        return _tune(args)
    if args.stage == "preset":
        return _preset(args)
    if args.stage == "exp":
        from ganaug.presets import main as exp_main

        try:
            return exp_main(args.preset, args.overrides, args.name, args.dry_run, args.params)
        except ConfigError as exc:
            print(f"ganaug exp: params error: {exc}", file=sys.stderr)
            return 2
        except FileNotFoundError as exc:
            print(f"ganaug exp: error: {exc}", file=sys.stderr)
            return 1
    if args.stage in ("promote", "quality"):
        try:
            if args.stage == "quality":
                from ganaug.quality.compare import main as quality_main

                return quality_main(args)
            return _promote(args)
        except ConfigError as exc:
            print(f"ganaug {args.stage}: params error: {exc}", file=sys.stderr)
            return 2
        except (ValueError, FileNotFoundError) as exc:
            print(f"ganaug {args.stage}: error: {exc}", file=sys.stderr)
            return 1
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"ganaug {args.stage}: params error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for section in STAGES[args.stage][0]:
            print(dump_yaml({section: getattr(params, section)}), end="")
        return 0
    try:
        if args.stage == "train-classifier":  # a bad --arm fails before torch is imported
            from ganaug.experiments.arms import parse_arm

            parse_arm(args.arm, params.arms)
        run(args.stage, params, args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("GANAUG_DEBUG"):
            raise
        print(f"ganaug {args.stage}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
