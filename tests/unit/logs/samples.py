"""Log lines as the real images write them (bodies only; tests add Docker's timestamp).

Healthy start-ups of each component, and the failures the pattern catalogue knows.
"""

from __future__ import annotations

# --- auth: GoTrue v2 (logrus JSON) --------------------------------------------------------
# A start with nothing to migrate, then a request (/health itself is not logged).
AUTH_HEALTHY = [
    '{"level":"info","msg":"Go runtime metrics collection started","time":"2026-11-30T11:50:00Z"}',
    '{"component":"pop","level":"info","msg":"Migrations already up to date, nothing to apply",'
    '"time":"2026-11-30T11:50:00Z"}',
    '{"args":[0.006539292],"component":"pop","level":"info","msg":"%.4f seconds",'
    '"time":"2026-11-30T11:50:00Z"}',
    '{"level":"info","msg":"GoTrue migrations applied successfully",'
    '"time":"2026-11-30T11:50:01Z"}',
    '{"level":"info","msg":"GoTrue API started on: 0.0.0.0:9999","time":"2026-11-30T11:50:01Z"}',
    '{"component":"api","duration":1200345,"level":"info","method":"GET",'
    '"msg":"request completed","path":"/settings","referer":"","remote_addr":"172.18.0.9",'
    '"request_id":"9a1b2c","status":200,"time":"2026-11-30T11:55:00Z"}',
]
AUTH_PASSWORD_FATAL = (
    '{"level":"fatal","msg":"running db migrations: Migrator: problem creating schema '
    "migrations: couldn't start a new transaction: could not create new transaction: failed "
    "to connect to `host=db user=supabase_auth_admin database=postgres`: failed SASL auth "
    '(FATAL: password authentication failed for user \\"supabase_auth_admin\\" (SQLSTATE '
    '28P01))","time":"2026-11-30T11:50:00Z"}')
AUTH_DB_REFUSED = (
    '{"level":"fatal","msg":"running db migrations: Migrator: problem creating schema '
    "migrations: couldn't start a new transaction: could not create new transaction: failed "
    "to connect to `host=db user=supabase_auth_admin database=postgres`: dial error (dial tcp "
    '172.18.0.3:5432: connect: connection refused)","time":"2026-11-30T11:50:00Z"}')
AUTH_ROLE_MISSING = (
    '{"level":"fatal","msg":"running db migrations: Migrator: problem creating schema '
    "migrations: couldn't start a new transaction: could not create new transaction: failed "
    "to connect to `host=db user=supabase_auth_admin database=postgres`: server error (FATAL: "
    'role \\"supabase_auth_admin\\" does not exist (SQLSTATE 28000))",'
    '"time":"2026-11-30T11:50:00Z"}')
# pop v6.1.1's wording (migrator.go:213,279) when the role cannot use the auth schema
AUTH_MIGRATION_NO_SCHEMA = (
    '{"level":"fatal","msg":"running db migrations: Migrator: problem creating schema '
    'migrations: could not execute CREATE TABLE \\"schema_migrations\\" (\\n\\"version\\" '
    'VARCHAR (14) NOT NULL,\\nPRIMARY KEY(\\"version\\")\\n);\\nCREATE UNIQUE INDEX '
    '\\"schema_migrations_version_idx\\" ON \\"schema_migrations\\" (version);: ERROR: no '
    'schema has been selected to create in (SQLSTATE 3F000)","time":"2026-11-30T11:50:00Z"}')
# pop's `error executing <file>, sql: <content>: <err>` (migration_box.go:38)
AUTH_MIGRATION_FAILED = (
    '{"level":"fatal","msg":"running db migrations: error executing '
    'migrations/20240612123726_enable_rls_update_grants.up.sql, sql: do $$ begin\\n  alter '
    'table auth.users enable row level security;\\nend $$;\\n: ERROR: must be owner of table '
    'users (SQLSTATE 42501)","time":"2026-11-30T11:50:00Z"}')
# cmd/root_cmd.go:40 logs before logging is configured: logrus's text format
AUTH_CONFIG_EMPTY = (
    'time="2026-11-30T11:50:00Z" level=fatal msg="Failed to load configuration: '
    "envconfig.Process: assigning GOTRUE_EXTERNAL_EMAIL_ENABLED to Enabled: converting '' to "
    'type bool. details: strconv.ParseBool: parsing \\"\\": invalid syntax"')
AUTH_CONFIG_EMPTY_SECRET = (
    'time="2026-11-30T11:50:00Z" level=fatal msg="Failed to load configuration: failed to '
    'initialize *jwk.symmetricKey from []uint8: non-empty []byte key required"')
AUTH_JWT_BAD_SIGNATURE = (
    '{"component":"api","error":"invalid JWT: unable to parse or verify signature, token '
    'signature is invalid: signature is invalid","level":"info","method":"POST",'
    '"msg":"403: invalid JWT: unable to parse or verify signature, token signature is '
    'invalid: signature is invalid","path":"/admin/users","referer":"http://localhost:3000",'
    '"remote_addr":"172.18.0.1","request_id":"77aa","time":"2026-11-30T11:56:00Z"}')
AUTH_JWT_EXPIRED = (
    '{"component":"api","error":"invalid JWT: unable to parse or verify signature, token has '
    'invalid claims: token is expired","level":"info","method":"GET","msg":"403: invalid JWT: '
    'unable to parse or verify signature, token has invalid claims: token is expired",'
    '"path":"/user","referer":"","remote_addr":"172.18.0.1","request_id":"77ab",'
    '"time":"2026-11-30T11:56:00Z"}')
AUTH_JWT_MALFORMED = (
    '{"component":"api","error":"invalid JWT: unable to parse or verify signature, token is '
    'malformed: token contains an invalid number of segments","level":"info",'
    '"msg":"403: invalid JWT: unable to parse or verify signature, token is malformed: token '
    'contains an invalid number of segments","time":"2026-11-30T11:56:00Z"}')
AUTH_STARTED = (
    '{"level":"info","msg":"GoTrue API started on: 0.0.0.0:9999","time":"2026-11-30T11:58:00Z"}')
# GoTrue before v2 wrote logrus text
AUTH_LOGFMT = ('time="2021-12-02T19:38:22Z" level=fatal msg="failed to connect to `host=db '
               'user=postgres database=postgres`: hostname resolving error (lookup db on '
               '127.0.0.11:53: no such host)"')

# --- db: supabase/postgres 15 (log_line_prefix '%h %m [%p] %q%u@%d ') -----------------------
DB_HEALTHY = [
    " 2026-11-30 11:50:00.101 UTC [1] LOG:  pgaudit extension initialized",
    " 2026-11-30 11:50:00.102 UTC [1] LOG:  starting PostgreSQL 15.1 on x86_64-pc-linux-gnu, "
    "compiled by gcc (Ubuntu 10.3.0-1ubuntu1~20.04) 10.3.0, 64-bit",
    ' 2026-11-30 11:50:00.103 UTC [1] LOG:  listening on IPv4 address "0.0.0.0", port 5432',
    " 2026-11-30 11:50:00.110 UTC [1] LOG:  database system is ready to accept connections",
    " 2026-11-30 11:50:00.120 UTC [52] LOG:  pg_cron scheduler started",
    "172.18.0.6 2026-11-30 11:51:00.000 UTC [77] supabase_admin@postgres WARNING:  "
    'there is no transaction in progress',
]
DB_PASSWORD_FATAL = [
    "172.18.0.5 2026-11-30 11:50:00.186 UTC [42] supabase_auth_admin@postgres FATAL:  "
    'password authentication failed for user "supabase_auth_admin"',
    "172.18.0.5 2026-11-30 11:50:00.186 UTC [42] supabase_auth_admin@postgres DETAIL:  "
    'Password does not match for user "supabase_auth_admin".',
    '\tConnection matched pg_hba.conf line 89: "host  all  all  172.16.0.0/12  scram-sha-256"',
]
DB_SUPERUSER_FATAL = (
    "172.18.0.9 2026-11-30 11:50:00.200 UTC [43] postgres@postgres FATAL:  password "
    'authentication failed for user "postgres"')
DB_HBA_FATAL = (
    "172.18.0.7 2026-11-30 11:50:00.300 UTC [44] authenticator@postgres FATAL:  no pg_hba.conf "
    'entry for host "172.18.0.7", user "authenticator", database "postgres", no encryption')
DB_STARTING_UP = (
    "172.18.0.5 2026-11-30 11:49:59.900 UTC [30] supabase_auth_admin@postgres FATAL:  the "
    "database system is starting up")
DB_DISK_FULL = (
    " 2026-11-30 11:50:00.400 UTC [60] PANIC:  could not write to file "
    '"pg_wal/xlogtemp.60": No space left on device')
DB_OUT_OF_MEMORY = [
    "172.18.0.6 2026-11-30 11:50:00.500 UTC [61] supabase_admin@postgres ERROR:  out of memory",
    "172.18.0.6 2026-11-30 11:50:00.500 UTC [61] supabase_admin@postgres DETAIL:  Failed on "
    "request of size 262144 in memory context \"ExecutorState\".",
]
DB_PORT_IN_USE = (
    ' 2026-11-30 11:50:00.600 UTC [1] LOG:  could not bind IPv4 address "0.0.0.0": Address '
    "already in use")

# --- kong: Kong 2.8 (nginx error log + combined access log) ------------------------------
KONG_HEALTHY = [
    '2026/11/30 11:50:01 [warn] 1#0: load balancing method redefined in '
    '/usr/local/kong/nginx-kong.conf:60',
    '2026/11/30 11:50:01 [notice] 1#0: using the "epoll" event method',
    "2026/11/30 11:50:01 [notice] 1#0: start worker processes",
    "2026/11/30 11:50:01 [notice] 1#0: start worker process 1100",
    "2026/11/30 11:50:02 [debug] 1100#0: *1 [lua] globalpatches.lua:10: randomseed(): seeding "
    "PRNG from OpenSSL RAND_bytes()",
    '172.18.0.1 - - [30/Nov/2026:11:55:00 +0000] "GET /auth/v1/health HTTP/1.1" 200 91 "-" '
    '"curl/7.88.1"',
]
KONG_UPSTREAM_REFUSED = (
    "2026/11/30 11:56:00 [error] 1100#0: *53 connect() failed (111: Connection refused) while "
    'connecting to upstream, client: 172.18.0.1, server: kong, request: "POST '
    '/auth/v1/admin/users HTTP/1.1", upstream: "http://172.18.0.5:9999/admin/users", host: '
    '"127.0.0.1:8100"')
KONG_UPSTREAM_TIMEOUT = (
    "2026/11/30 11:56:01 [error] 1100#0: *54 upstream timed out (110: Operation timed out) "
    "while reading response header from upstream, client: 172.18.0.1, server: kong, request: "
    '"GET /rest/v1/ HTTP/1.1", upstream: "http://172.18.0.6:3000/", host: "127.0.0.1:8100"')
KONG_DNS_FAILED = (
    "2026/11/30 11:56:02 [error] 1100#0: *60 [lua] init.lua:297: execute(): DNS resolution "
    'failed: dns server error: 3 name error. Tried: ["(short)auth:(na) - cache-miss"], client: '
    '172.18.0.1, server: kong, request: "GET /auth/v1/health HTTP/1.1", host: "127.0.0.1:8100"')
KONG_ACCESS_502 = ('172.18.0.1 - - [30/Nov/2026:11:56:00 +0000] "POST /auth/v1/admin/users '
                   'HTTP/1.1" 502 75 "-" "node"')
KONG_ACCESS_401 = ('172.18.0.1 - - [30/Nov/2026:11:56:00 +0000] "GET /rest/v1/todos HTTP/1.1" '
                   '401 52 "-" "supabase-js/2.39.0"')
KONG_DUPLICATE_SERVICE = [
    "2026/11/30 11:50:01 [error] 1#0: init_by_lua error: /usr/local/share/lua/5.1/kong/"
    "init.lua:553: error parsing declarative config file /home/kong/kong.yml:",
    "in 'services':",
    "  - in entry 3 of 'services': uniqueness violation: 'services' entity with name set to "
    "'rest-v1' already declared",
    "stack traceback:",
    "\t[C]: in function 'error'",
    "\t/usr/local/share/lua/5.1/kong/init.lua:553: in function 'init'",
    "\tinit_by_lua:3: in main chunk",
]
KONG_PORT_IN_USE = ("2026/11/30 11:50:01 [emerg] 1#0: bind() to 0.0.0.0:8000 failed (98: "
                    "Address already in use)")

# --- rest: PostgREST 12 ----------------------------------------------------------------
REST_HEALTHY = [
    "30/Nov/2026:11:50:02 +0000: Starting PostgREST 12.2.0...",
    "30/Nov/2026:11:50:02 +0000: Attempting to connect to the database...",
    "30/Nov/2026:11:50:02 +0000: Successfully connected to PostgreSQL 15.1 (Ubuntu "
    "15.1-1.pgdg20.04+1) on x86_64-pc-linux-gnu, compiled by gcc 10.3.0, 64-bit",
    "30/Nov/2026:11:50:02 +0000: Listening on port 3000",
    "30/Nov/2026:11:50:02 +0000: Listening for notifications on the pgrst channel",
    "30/Nov/2026:11:50:02 +0000: Config reloaded",
    "30/Nov/2026:11:50:02 +0000: Schema cache queried in 12.3 milliseconds",
    "30/Nov/2026:11:50:02 +0000: Schema cache loaded 8 Relations, 0 Relationships, 0 Functions, "
    "0 Domain Representations, 4 Media Type Handlers, 1196 Timezones",
]
REST_PASSWORD_FAILED = [
    '30/Nov/2026:11:50:00 +0000: {"code":"PGRST000","details":"FATAL:  password '
    'authentication failed for user \\"authenticator\\"\\n","hint":null,"message":"Database '
    'connection error. Retrying the connection."}',
    '30/Nov/2026:11:50:00 +0000: FATAL:  password authentication failed for user '
    '"authenticator"',
    "postgrest: thread killed",
]
REST_DB_REFUSED = [
    '30/Nov/2026:11:51:00 +0000: {"code":"PGRST000","details":"connection to server at '
    '\\"db\\" (172.18.0.3), port 5432 failed: Connection refused\\n\\tIs the server running on '
    'that host and accepting TCP/IP connections?\\n","hint":null,"message":"Database '
    'connection error. Retrying the connection."}',
    "30/Nov/2026:11:51:00 +0000: Attempting to reconnect to the database in 1 seconds...",
]
REST_CONNECTED = "30/Nov/2026:11:52:00 +0000: Connection successful"
REST_JWT = ('30/Nov/2026:11:53:00 +0000: {"code":"PGRST301","details":null,"hint":null,'
            '"message":"JWSError JWSInvalidSignature"}')
REST_JWT_EXPIRED = ('30/Nov/2026:11:53:00 +0000: {"code":"PGRST303","details":null,'
                    '"hint":null,"message":"JWT expired"}')

# --- others ------------------------------------------------------------------------------
ANALYTICS_PASSWORD = (
    '17:10:03.190 [error] Postgrex.Protocol (#PID<0.4729.0>) failed to connect: ** '
    '(Postgrex.Error) FATAL 28P01 (invalid_password) password authentication failed for user '
    '"supabase_admin"')
VECTOR_WARN = ('2026-11-30T11:50:27.520150Z  WARN sink{component_kind="sink" '
               'component_id=logflare_db}: vector::internal_events::http_client: HTTP error.')
IMGPROXY_INFO = ("INFO    [2026-11-30T11:50:22Z] Started /health  request_id=__S2piFg "
                 "method=GET client_ip=127.0.0.1")
STORAGE_PINO = ('{"level":50,"time":"2026-11-30T11:50:30.000Z","pid":1,"hostname":"abc",'
                '"msg":"connect ECONNREFUSED 172.18.0.3:5432"}')
FUNCTIONS_OOM = ("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of "
                 "memory")
