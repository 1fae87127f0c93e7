-- Creates the two databases of docker/compose.yaml, each owned by its own login role:
--   warehouse  the pipeline's warehouse (the flagged_users table, created by the score step)
--   airflow    Airflow's metadata database (and the Celery result backend)
--
-- The official postgres image runs this once, on the first start with an empty data volume,
-- as `psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres -f <this file>`.
-- Passwords come from the container's environment through psql's \getenv (psql 15+), so
-- none is written here; a missing one stops the initialisation with an error.

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv warehouse_password WAREHOUSE_DB_PASSWORD

\if :{?airflow_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'AIRFLOW_DB_PASSWORD is not set in the postgres container'; END $$;
\endif

\if :{?warehouse_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'WAREHOUSE_DB_PASSWORD is not set in the postgres container'; END $$;
\endif

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE warehouse LOGIN PASSWORD :'warehouse_password';
CREATE DATABASE warehouse OWNER warehouse;
REVOKE ALL ON DATABASE warehouse FROM PUBLIC;

-- Since PostgreSQL 15 the public schema belongs to pg_database_owner, so each owner role
-- can create its tables there without further grants.
