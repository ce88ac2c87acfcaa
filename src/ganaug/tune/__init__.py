"""Hyperparameter studies with Optuna (README "Hyperparameter studies").

- `space`: the `tune.gan_space` / `tune.mixing_space` search spaces -> Optuna suggestions.
- `storage`: where a study lives (SQLite, a journal file, PostgreSQL) and how trials of dead
  workers are failed and retried.
- `objective`: a GAN trial, scored on the *validation* split's reference-classifier features,
  reporting each evaluation for pruning and logging itself as a nested MLflow run.
- `mixing`: a mixing trial (synthetic ratio, filter, classifier lr with a fixed generator),
  scored on the *validation* split over classifier seeds; the one final test comparison of the
  chosen configuration against real-only and the real-only controls of evaluate.references
  (`final_test`, through `ganaug.stats.compare`).
- `study`: opening/checking a study (`StudyKind`: GAN or mixing), the worker loop with its
  budget, parallel workers, the parent MLflow run, `show` and `apply`.

Only `mixing.final_test` is given test images, by `ganaug.stages.tune_mixing` after the search;
the searches' wiring (`ganaug.stages.tune_gan`, `tune_mixing`) loads train and val only.
"""
