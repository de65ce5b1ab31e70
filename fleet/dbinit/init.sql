-- Base roles and schemas of a Supabase database, as supabase/postgres 15.1.1.78's
-- init-scripts (migrations/db/init-scripts/00000000000000-initial-schema.sql, -auth-schema,
-- -storage-schema, -post-setup) create them, reduced to what the stand-ins and the doctor's
-- checks use. entry.py runs it once as postgres (still a superuser then) over the socket,
-- before the instance's init-scripts; migrations.sql demotes postgres afterwards.
\set ON_ERROR_STOP on
\getenv pgpass POSTGRES_PASSWORD

CREATE USER supabase_admin;
ALTER USER supabase_admin WITH SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS;
CREATE USER supabase_replication_admin WITH LOGIN REPLICATION;
CREATE ROLE supabase_read_only_user WITH LOGIN BYPASSRLS;
GRANT pg_read_all_data TO supabase_read_only_user;

CREATE SCHEMA IF NOT EXISTS extensions;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE USER authenticator NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;
CREATE ROLE pgbouncer WITH LOGIN;
CREATE ROLE dashboard_user WITH CREATEDB CREATEROLE REPLICATION;
CREATE ROLE supabase_functions_admin WITH LOGIN CREATEROLE NOINHERIT;

GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR USER supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR USER supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR USER supabase_admin IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
ALTER USER supabase_admin SET search_path TO public, extensions;
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';
CREATE SCHEMA IF NOT EXISTS graphql_public;
GRANT USAGE ON SCHEMA graphql_public TO anon, authenticated, service_role;

-- auth: the schema belongs to supabase_admin, GoTrue's tables to supabase_auth_admin.
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE USER supabase_auth_admin NOINHERIT CREATEROLE LOGIN NOREPLICATION;
GRANT ALL PRIVILEGES ON SCHEMA auth TO supabase_auth_admin;
ALTER USER supabase_auth_admin SET search_path = "auth";
GRANT CREATE, CONNECT ON DATABASE postgres TO supabase_auth_admin;
-- The shapes GoTrue's migrations give these tables; its stand-in creates them too
-- (IF NOT EXISTS), as the real service runs its migrations at start.
SET ROLE supabase_auth_admin;
CREATE TABLE IF NOT EXISTS auth.users (
    id uuid PRIMARY KEY,
    aud varchar(255),
    role varchar(255),
    email varchar(255) UNIQUE,
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_sso_user boolean NOT NULL DEFAULT false,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz
);
CREATE TABLE IF NOT EXISTS auth.audit_log_entries (
    instance_id uuid,
    id uuid PRIMARY KEY,
    payload json,
    created_at timestamptz,
    ip_address varchar(64) NOT NULL DEFAULT ''
);
RESET ROLE;

-- storage: the schema belongs to supabase_admin, its tables to supabase_storage_admin.
CREATE SCHEMA IF NOT EXISTS storage AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA storage TO postgres, anon, authenticated, service_role;
CREATE USER supabase_storage_admin NOINHERIT CREATEROLE LOGIN NOREPLICATION;
GRANT ALL PRIVILEGES ON SCHEMA storage TO supabase_storage_admin;
ALTER USER supabase_storage_admin SET search_path = "storage";
GRANT CREATE, CONNECT ON DATABASE postgres TO supabase_storage_admin;

ALTER ROLE supabase_admin SET search_path TO "$user", public, auth, extensions;
ALTER ROLE postgres SET search_path TO "$user", public, extensions;

-- migrate.sh, after the init-scripts: supabase_admin gets the instance password.
ALTER USER supabase_admin WITH PASSWORD :'pgpass';
