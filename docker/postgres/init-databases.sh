#!/usr/bin/env bash
# Creates the stack's databases and their owner roles, once, when the PostgreSQL volume is first
# initialised (the official image runs /docker-entrypoint-initdb.d/* only on an empty data
# directory). Passwords come from the environment (.env), never from this file:
#   airflow        owner of database airflow (Airflow metadata and the Celery result backend)
#   mlflow         owner of database mlflow (tracking and model registry)
#   rakuten_owner  owner of database rakuten (the predictions store); it may create roles, so
#                  `rakuten db grant` can make the app and analyst roles it grants to
# No role is a superuser. To change a password later, use ALTER ROLE (see docs/operations.md).
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set (see .env.example)}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (see .env.example)}"
: "${RAKUTEN_DB_OWNER_PASSWORD:?RAKUTEN_DB_OWNER_PASSWORD must be set (see .env.example)}"

# create_database DATABASE ROLE PASSWORD [ROLE ATTRIBUTES...]
create_database() {
    local database=$1 role=$2 secret=$3
    shift 3
    # psql quotes :"name" as an identifier and :'value' as a literal: no SQL is built by hand.
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v db="$database" -v role="$role" -v pw="$secret" -v attributes="$*" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB :attributes PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
    echo "created database ${database} owned by ${role}"
}

create_database airflow airflow "$AIRFLOW_DB_PASSWORD" NOCREATEROLE
create_database mlflow mlflow "$MLFLOW_DB_PASSWORD" NOCREATEROLE
create_database rakuten rakuten_owner "$RAKUTEN_DB_OWNER_PASSWORD" CREATEROLE
