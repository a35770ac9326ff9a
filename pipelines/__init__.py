"""The steps' orchestration, split by concern:

- `config`: params.yaml typed once, and the resolved config of one run;
- `steps`: one typed function per step (prepare, validate, train, evaluate, export, gate,
  publish/promote, rollback, the retraining cycle); the CLI, `dvc.yaml` and the Prefect tasks
  all call these;
- `training`: distribution strategies, Keras fixes and the run folder of the train step;
- `tracking`: MLflow (store, run log, registry), lineage (git and DVC hashes), DVC versioning;
- `retraining`: the champion/challenger cycle's parts (challenger, infra-validation, record);
- `flows`: Prefect flows, tasks and schedules, which only sequence the steps;
- `cli`: the `kerasops` command line.
"""
