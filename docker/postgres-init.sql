-- One database per service on the compose PostgreSQL (run once, when its volume is created).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
