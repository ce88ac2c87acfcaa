"""Hyperparameter studies with Optuna (README "Hyperparameter studies").

- `space`: the `tune.gan_space` search space -> Optuna suggestions -> a GAN config.
- `storage`: where a study lives (SQLite, a journal file, PostgreSQL) and how trials of dead
  workers are failed and retried.
- `objective`: a GAN trial, scored on the *validation* split's reference-classifier features,
  reporting each evaluation for pruning and logging itself as a nested MLflow run.
- `study`: opening/checking a study, the worker loop with its budget, parallel workers, the
  parent MLflow run, `show` and `apply`.

Nothing here reads the test split: the wiring (`ganaug.stages.tune_gan`) loads train and val only.
"""
