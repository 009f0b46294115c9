-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
