"""Prefect: flows that only sequence the steps (each calls a plain sequence of
`kerasops.pipelines.steps` with `PrefectRunner`, which makes every step a task), their
schedules, and Prefect's local mode. Importing this package imports Prefect: call
`local.local_prefect` first."""
