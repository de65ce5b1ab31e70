-- supabase/postgres 15.1.1.78's migrations (migrations/db/migrations/) that shape roles the
-- doctor logs in as, run by entry.py as supabase_admin after the init-scripts, as the
-- image's migrate.sh does: postgres stops being a superuser
-- (10000000000000_demote-postgres.sql) and keeps the grants later migrations give it.
\set ON_ERROR_STOP on

GRANT ALL ON DATABASE postgres TO postgres;
GRANT ALL ON SCHEMA auth TO postgres;
GRANT ALL ON SCHEMA extensions TO postgres;
GRANT ALL ON SCHEMA storage TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA auth TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA storage TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA extensions TO postgres;
GRANT ALL ON ALL SEQUENCES IN SCHEMA auth TO postgres;
GRANT ALL ON ALL SEQUENCES IN SCHEMA storage TO postgres;
GRANT ALL ON ALL SEQUENCES IN SCHEMA extensions TO postgres;
GRANT ALL ON ALL ROUTINES IN SCHEMA auth TO postgres;
GRANT ALL ON ALL ROUTINES IN SCHEMA storage TO postgres;
GRANT ALL ON ALL ROUTINES IN SCHEMA extensions TO postgres;
ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;

-- 20220609081115, 20230201083204, 20230306081037, 20240606060239
GRANT supabase_auth_admin, supabase_storage_admin TO postgres;
GRANT anon, authenticated, service_role TO postgres;
GRANT pg_monitor TO postgres;
GRANT pg_read_all_data, pg_signal_backend TO postgres;
