"""The step layer: each step of the pipeline is one typed function, defined once, here.

The `kerasops` CLI calls these, each `dvc.yaml` stage runs the CLI command of one, and the
Prefect flows run them as tasks through a `StepRunner`; every step runs without Prefect.

| step | function | module |
|---|---|---|
| prepare | `prepare`, `ensure_prepared` | `prepare` |
| validate | `validate` | `validate` |
| train | `train_model` | `train` |
| evaluate | `evaluate_run`, `score` (through the family's recipe) | `evaluate` |
| export | `export_model` | `export` |
| gate | `gate`, `evaluate_and_gate` | `gate` |
| publish / promote | `publish`, `promote` | `publish` |
| rollback | `rollback` | `rollback` |
| retraining cycle | `retrain` | `retrain` |
| pipeline | `run_pipeline`, `train_and_report` | `pipeline` |
| batch scoring | `predict_batch` | `predict_batch` |

Import the module of a step (`from kerasops.pipelines.steps.train import train_model`):
this package imports nothing itself, so using one step does not load the others.
"""
