-- Database webhooks: the supabase_functions schema and its tables (the trigger functions
-- that call pg_net are left out: the fleet has no pg_net).
BEGIN;
CREATE SCHEMA IF NOT EXISTS supabase_functions AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA supabase_functions TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA supabase_functions
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;

CREATE TABLE IF NOT EXISTS supabase_functions.migrations (
    version text PRIMARY KEY,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO supabase_functions.migrations (version) VALUES ('initial')
    ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS supabase_functions.hooks (
    id bigserial PRIMARY KEY,
    hook_table_id integer NOT NULL,
    hook_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    request_id bigint
);
CREATE INDEX IF NOT EXISTS supabase_functions_hooks_request_id_idx
    ON supabase_functions.hooks USING btree (request_id);
CREATE INDEX IF NOT EXISTS supabase_functions_hooks_h_table_id_h_name_idx
    ON supabase_functions.hooks USING btree (hook_table_id, hook_name);

ALTER TABLE supabase_functions.hooks OWNER TO supabase_functions_admin;
ALTER SCHEMA supabase_functions OWNER TO supabase_functions_admin;
COMMIT;
