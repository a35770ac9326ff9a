-- One PostgreSQL for the MLflow tracking store (database "mlflow", created by POSTGRES_DB)
-- and the Prefect server (database "prefect").
CREATE DATABASE prefect;
