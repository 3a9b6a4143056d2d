#!/usr/bin/env bash
# The stack's databases and roles, created once by the postgres image on its first start (an
# empty data volume); it runs every executable *.sh in /docker-entrypoint-initdb.d.
#
#   bank_marketing  owned by role bank_marketing; schema monitoring holds the monitoring tables
#   mlflow          owned by role mlflow: the MLflow server's backend store
#   dagster         owned by role dagster: dagster-postgres run, event and schedule storage
#
# Each role can connect to its own database only. Grafana's role ($GRAFANA_DB_USER) is read-only:
# it may connect to all three and SELECT every table their owners create, now or later.
# Passwords come from the environment (docker/.env); psql quotes them, none is stored here.
# The same script runs against any PostgreSQL >= 15 given PGHOST, PGPORT and a superuser in
# POSTGRES_USER (the integration tests do that).
set -euo pipefail

for name in BANK_MARKETING_DB_PASSWORD MLFLOW_DB_PASSWORD DAGSTER_PG_PASSWORD GRAFANA_DB_USER \
    GRAFANA_DB_PASSWORD; do
  if [ -z "${!name:-}" ]; then
    echo "$name must be set (docker/.env)" >&2
    exit 1
  fi
done

psql --no-psqlrc --set=ON_ERROR_STOP=1 --username="${POSTGRES_USER:-postgres}" --dbname=postgres \
  --set=app_db="${BANK_MARKETING_DB_NAME:-bank_marketing}" \
  --set=app_user="${BANK_MARKETING_DB_USER:-bank_marketing}" \
  --set=app_password="$BANK_MARKETING_DB_PASSWORD" \
  --set=mlflow_db="${MLFLOW_DB_NAME:-mlflow}" \
  --set=mlflow_user="${MLFLOW_DB_USER:-mlflow}" \
  --set=mlflow_password="$MLFLOW_DB_PASSWORD" \
  --set=dagster_db="${DAGSTER_PG_DB:-dagster}" \
  --set=dagster_user="${DAGSTER_PG_USER:-dagster}" \
  --set=dagster_password="$DAGSTER_PG_PASSWORD" \
  --set=grafana_user="$GRAFANA_DB_USER" \
  --set=grafana_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password';
CREATE ROLE :"dagster_user" LOGIN PASSWORD :'dagster_password';
CREATE ROLE :"grafana_user" LOGIN PASSWORD :'grafana_password';
ALTER ROLE :"grafana_user" SET default_transaction_read_only = on;

CREATE DATABASE :"app_db" OWNER :"app_user";
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_user";
CREATE DATABASE :"dagster_db" OWNER :"dagster_user";
REVOKE ALL ON DATABASE :"app_db", :"mlflow_db", :"dagster_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"app_db", :"mlflow_db", :"dagster_db" TO :"grafana_user";

\connect :"app_db"
CREATE SCHEMA monitoring AUTHORIZATION :"app_user";
GRANT USAGE ON SCHEMA monitoring TO :"grafana_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_user" IN SCHEMA monitoring
  GRANT SELECT ON TABLES TO :"grafana_user";
-- Dashboards may name the monitoring tables without their schema.
ALTER ROLE :"grafana_user" IN DATABASE :"app_db" SET search_path = monitoring, public;

\connect :"mlflow_db"
ALTER DEFAULT PRIVILEGES FOR ROLE :"mlflow_user" IN SCHEMA public
  GRANT SELECT ON TABLES TO :"grafana_user";

\connect :"dagster_db"
ALTER DEFAULT PRIVILEGES FOR ROLE :"dagster_user" IN SCHEMA public
  GRANT SELECT ON TABLES TO :"grafana_user";
SQL
