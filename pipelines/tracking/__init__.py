"""Tracking and lineage: MLflow's store and the run log recipes report through (`store`), the
model registry (`registry`), git and DVC hashes of what a run read (`lineage`), DVC data
versioning (`dvc`), and runs read back for the terminal (`runs`)."""
