"""GoTrue's start-up migrations as gobuffalo/pop v6.1.1 runs them, for the GoTrue stand-in.

`gotrue` (cmd/root_cmd.go:19-22) runs `migrate` before it serves. cmd/migrate_cmd.go:102-107
calls pop's Migrator.Up and, on any error, `log.Fatalf("%v", errors.Wrap(err, "running db
migrations"))`: one fatal line, exit 1, no retry (a refused or failed login is as fatal as a
SQL error, so Docker's restart policy is the only retry). What pop does (migrator.go):

- exec (267-282) times the run and logs `%.4f seconds` through GoTrue's pop logger
  (observability/logging.go:87-124: component "pop", the format string as msg, its
  arguments as "args") in a defer, so that line comes before the fatal one as well;
- CreateSchemaMigrations (194-217): `select * from schema_migrations`; if that fails, the
  fizz v1.14.4 CREATE TABLE (translators/postgres.go:21-71) in a new transaction, errors
  wrapped as `could not execute <sql>: <err>`, the whole as `Migrator: problem creating
  schema migrations: <err>`. A connection failure surfaces from the transaction's BEGIN:
  `couldn't start a new transaction: could not create new transaction: <pgx error>`
  (connection.go:225, tx.go:30);
- UpTo (84-129): per migration, the version check (`problem checking for migration version
  %s: %w`), then the file's SQL in a transaction (migration_box.go:36-39: `error executing
  <path>, sql: <content>: <err>`) and the version insert (`problem inserting migration
  version %s: %w`); `> <name>` per applied migration, then `Successfully applied %d
  migrations.` or `Migrations already up to date, nothing to apply`.

The schema_migrations table is unqualified, as in pop: it lands in the role's search_path
(supabase_auth_admin's is `auth`). A role without USAGE on that schema cannot see it or
create in it, which is Postgres' `no schema has been selected to create in (SQLSTATE
3F000)` (supabase/supabase#7969). The migration files keep GoTrue's names and versions; their
SQL is reduced to the tables and columns the stand-in uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

# fizz's CREATE TABLE for pop's schema_migrations (string(14) primary key, unique index).
SCHEMA_MIGRATIONS_SQL = (
    'CREATE TABLE "schema_migrations" (\n"version" VARCHAR (14) NOT NULL,\n'
    'PRIMARY KEY("version")\n);\n'
    'CREATE UNIQUE INDEX "schema_migrations_version_idx" ON "schema_migrations" (version);'
)


@dataclass(frozen=True)
class Migration:
    """One embedded migration file (`migrations/<version>_<name>[.<dialect>].up.sql`)."""

    file: str
    sql: str  # "{ns}" stands for GoTrue's `{{ index .Options "Namespace" }}`

    @property
    def version(self) -> str:
        """The version pop records in schema_migrations."""
        return self.file.split("_", 1)[0]

    @property
    def name(self) -> str:
        """The name pop logs for an applied migration."""
        return self.file.split("_", 1)[1].split(".", 1)[0]

    @property
    def path(self) -> str:
        """The path pop names in its errors (GoTrue embeds migrations/*)."""
        return f"migrations/{self.file}"


MIGRATIONS: tuple[Migration, ...] = (
    Migration("00_init_auth_schema.up.sql", """-- auth.users definition

CREATE TABLE IF NOT EXISTS {ns}.users (
\tid uuid NOT NULL PRIMARY KEY,
\taud varchar(255) NULL,
\t"role" varchar(255) NULL,
\temail varchar(255) NULL UNIQUE,
\tencrypted_password varchar(255) NULL,
\traw_app_meta_data jsonb NULL,
\traw_user_meta_data jsonb NULL,
\tcreated_at timestamptz NULL,
\tupdated_at timestamptz NULL
);

-- auth.audit_log_entries definition

CREATE TABLE IF NOT EXISTS {ns}.audit_log_entries (
\tinstance_id uuid NULL,
\tid uuid NOT NULL PRIMARY KEY,
\tpayload json NULL,
\tcreated_at timestamptz NULL
);
"""),
    Migration("20210710035447_alter_users.up.sql", """-- alter user schema

ALTER TABLE {ns}.users
ADD COLUMN IF NOT EXISTS email_confirmed_at timestamptz NULL DEFAULT NULL,
ADD COLUMN IF NOT EXISTS confirmation_sent_at timestamptz NULL DEFAULT NULL,
ADD COLUMN IF NOT EXISTS last_sign_in_at timestamptz NULL DEFAULT NULL;
"""),
    Migration("20220614074223_add_ip_address_to_audit_log.postgres.up.sql",
              """-- Add IP Address to audit log
ALTER TABLE {ns}.audit_log_entries
ADD COLUMN IF NOT EXISTS ip_address VARCHAR(64) NOT NULL DEFAULT '';
"""),
    Migration("20221215195500_modify_users_email_unique_index.up.sql", """alter table {ns}.users
  add column if not exists is_sso_user boolean not null default false;
"""),
    Migration("20230116124412_add_deleted_at.up.sql", """-- adds deleted_at column to auth.users

alter table {ns}.users
add column if not exists deleted_at timestamptz null;
"""),
)


class MigrationError(Exception):
    """A migration run that failed; the text is pop's wrapped error."""


Log = Callable[..., None]  # log_json(level, msg, **fields)
PgxError = Callable[[BaseException], str]  # a psycopg failure worded as pgx words it


def _sql_error(exc: psycopg.Error, pgx: PgxError) -> str:
    """pgconn.PgError.Error(): `<severity>: <message> (SQLSTATE <code>)`."""
    if exc.sqlstate:
        severity = exc.diag.severity_nonlocalized or exc.diag.severity or "ERROR"
        return f"{severity}: {exc.diag.message_primary} (SQLSTATE {exc.sqlstate})"
    return pgx(exc)


def _create_schema_migrations(conn: psycopg.Connection[Any], pgx: PgxError) -> None:
    try:
        conn.execute("select * from schema_migrations")
        return
    except psycopg.Error:
        pass
    try:
        with conn.transaction():
            conn.execute(SCHEMA_MIGRATIONS_SQL)
    except psycopg.Error as exc:
        raise MigrationError("Migrator: problem creating schema migrations: could not execute "
                             f"{SCHEMA_MIGRATIONS_SQL}: {_sql_error(exc, pgx)}") from None


def _up(conn: psycopg.Connection[Any], namespace: str, pgx: PgxError, log: Log) -> None:
    applied = 0
    for migration in MIGRATIONS:
        try:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = "
                               "%s)", (migration.version,)).fetchone()
        except psycopg.Error as exc:
            raise MigrationError(f"problem checking for migration version {migration.version}: "
                                 f"{_sql_error(exc, pgx)}") from None
        if row is not None and row[0]:
            continue
        content = migration.sql.replace("{ns}", namespace)
        try:
            with conn.transaction():
                try:
                    conn.execute(content)
                except psycopg.Error as exc:
                    raise MigrationError(f"error executing {migration.path}, sql: {content}: "
                                         f"{_sql_error(exc, pgx)}") from None
                try:
                    conn.execute("insert into schema_migrations (version) values (%s)",
                                 (migration.version,))
                except psycopg.Error as exc:
                    raise MigrationError(f"problem inserting migration version "
                                         f"{migration.version}: {_sql_error(exc, pgx)}"
                                         ) from None
        except psycopg.Error as exc:
            raise MigrationError("database error on committing or rolling back transaction: "
                                 f"{_sql_error(exc, pgx)}") from None
        log("info", "> %s", component="pop", args=[migration.name])
        applied += 1
    if applied:
        log("info", "Successfully applied %d migrations.", component="pop", args=[applied])
    else:
        log("info", "Migrations already up to date, nothing to apply", component="pop")


def run(connect: Callable[[], psycopg.Connection[Any]], namespace: str, pgx: PgxError,
        log: Log) -> None:
    """Migrator.Up: raise MigrationError with pop's text; the timer line is logged either way."""
    started = time.monotonic()
    try:
        try:
            conn = connect()
        except psycopg.Error as exc:
            # pop's first statement fails to connect, then BEGIN does.
            raise MigrationError("Migrator: problem creating schema migrations: couldn't start "
                                 "a new transaction: could not create new transaction: "
                                 f"{pgx(exc)}") from None
        with conn:
            _create_schema_migrations(conn, pgx)
            _up(conn, namespace, pgx, log)
    finally:
        log("info", "%.4f seconds", component="pop",
            args=[round(time.monotonic() - started, 9)])
