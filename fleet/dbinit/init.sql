-- Base roles and schemas of a Supabase database, as the supabase/postgres image's own init
-- scripts create them, reduced to what the stand-ins and the doctor's checks use. entry.py
-- runs it once, as supabase_admin over the local socket, before the instance's SQL files.
\set ON_ERROR_STOP on
\getenv pgpass POSTGRES_PASSWORD

ALTER ROLE supabase_admin WITH PASSWORD :'pgpass';
CREATE ROLE postgres WITH LOGIN SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS
    PASSWORD :'pgpass';

CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator WITH LOGIN NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;
GRANT anon, authenticated, service_role TO postgres;

CREATE ROLE pgbouncer WITH LOGIN;
CREATE ROLE supabase_auth_admin WITH LOGIN CREATEROLE NOINHERIT;
CREATE ROLE supabase_storage_admin WITH LOGIN CREATEROLE NOINHERIT;
CREATE ROLE supabase_functions_admin WITH LOGIN CREATEROLE NOINHERIT;
CREATE ROLE supabase_replication_admin WITH LOGIN REPLICATION;
CREATE ROLE supabase_read_only_user WITH LOGIN BYPASSRLS;
CREATE ROLE dashboard_user WITH CREATEDB CREATEROLE REPLICATION;

GRANT CREATE, CONNECT ON DATABASE postgres TO supabase_auth_admin, supabase_storage_admin;

CREATE SCHEMA IF NOT EXISTS extensions;
CREATE SCHEMA IF NOT EXISTS graphql_public;
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_auth_admin;
CREATE SCHEMA IF NOT EXISTS storage AUTHORIZATION supabase_storage_admin;

GRANT USAGE ON SCHEMA public, extensions, graphql_public
    TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, dashboard_user, postgres;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role, postgres;
GRANT ALL ON SCHEMA public TO postgres, anon, authenticated, service_role;

ALTER ROLE supabase_auth_admin SET search_path = auth;
ALTER ROLE supabase_storage_admin SET search_path = storage;

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
