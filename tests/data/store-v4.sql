-- A version-4 store written by the release whose exporter.store held the operations,
-- locks and audit log (before actions.store); made with its Store, then dumped with
-- sqlite3's iterdump. The lock's holder was set to a gone host, last seen long ago.
BEGIN TRANSACTION;
CREATE TABLE audit (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        at               REAL NOT NULL,
        who              TEXT NOT NULL,
        role             TEXT NOT NULL,
        action           TEXT NOT NULL,
        instance_id      TEXT,
        operation_id     TEXT,
        inputs           TEXT NOT NULL,
        result           TEXT NOT NULL,
        duration_seconds REAL,
        steps            TEXT NOT NULL,
        error            TEXT
    );
INSERT INTO "audit" VALUES(1,1793534402.0,'ops','operator','safe_restart','aaaa0001','11111111111111111111111111111111','{"components":["rest"]}','succeeded',2.0,'[{"name":"stop","status":"ok","duration_seconds":1.5}]',NULL);
INSERT INTO "audit" VALUES(2,1793534400.0,'ops','operator','config_edit','aaaa0001',NULL,'{"changes":{"site_url":"x"}}','refused',NULL,'[]','rate limited');
CREATE TABLE counters (
        kind   TEXT NOT NULL,
        labels TEXT NOT NULL,
        value  INTEGER NOT NULL,
        PRIMARY KEY (kind, labels)
    );
INSERT INTO "counters" VALUES('operations','["safe_restart", "succeeded"]',1);
CREATE TABLE generation (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    );
INSERT INTO "generation" VALUES(1,3);
CREATE TABLE history (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        timestamp   REAL NOT NULL,
        healthy     INTEGER NOT NULL,
        trigger     TEXT NOT NULL,
        payload     TEXT NOT NULL
    );
CREATE TABLE instances (
        id    TEXT PRIMARY KEY,
        name  TEXT NOT NULL,
        owner TEXT
    );
INSERT INTO "instances" VALUES('aaaa0001','alpha','ops@example.com');
CREATE TABLE latest (
        instance_id TEXT PRIMARY KEY,
        timestamp   REAL NOT NULL,
        healthy     INTEGER NOT NULL,
        payload     TEXT NOT NULL
    , generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE locks (
        instance_id  TEXT PRIMARY KEY,
        op_id        TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        host         TEXT NOT NULL,
        acquired_at  REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
INSERT INTO "locks" VALUES('aaaa0001','22222222222222222222222222222222',0,'gone.invalid',1793534400.0,1793534400.0);
CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
INSERT INTO "meta" VALUES('docker_ok','1');
CREATE TABLE operations (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        status      TEXT NOT NULL,
        principal   TEXT NOT NULL,
        role        TEXT NOT NULL,
        inputs      TEXT NOT NULL,
        steps       TEXT NOT NULL,
        result      TEXT NOT NULL,
        error       TEXT,
        failed_step TEXT,
        created_at  REAL NOT NULL,
        finished_at REAL
    );
INSERT INTO "operations" VALUES('11111111111111111111111111111111','safe_restart','aaaa0001','succeeded','ops','operator','{"components":["rest"]}','[{"name":"stop","status":"ok","started_at":"2026-11-01T12:00:00+00:00","duration_seconds":1.5,"detail":{"stopped":["rest"]}}]','{"restarted":["rest"]}',NULL,NULL,1793534400.0,1793534402.0);
INSERT INTO "operations" VALUES('22222222222222222222222222222222','repair','aaaa0001','running','ops','admin','{"actions":["restart_kong"]}','[{"name":"plan","status":"ok","started_at":"2026-11-01T12:00:00+00:00","duration_seconds":0.1,"detail":{}},{"name":"restart_kong","status":"running","started_at":"2026-11-01T12:00:00+00:00","duration_seconds":null,"detail":{}}]','{}',NULL,NULL,1793534400.0,NULL);
CREATE TABLE schedules (
        instance_id TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        enabled     INTEGER NOT NULL,
        updated_at  TEXT NOT NULL,
        updated_by  TEXT
    );
CREATE INDEX history_instance_time ON history (instance_id, timestamp);
CREATE INDEX operations_instance_time ON operations (instance_id, created_at);
CREATE INDEX audit_time ON audit (at);
CREATE INDEX audit_instance_time ON audit (instance_id, at);
CREATE INDEX latest_generation ON latest (generation, instance_id);
CREATE TRIGGER latest_inserted AFTER INSERT ON latest BEGIN
        UPDATE latest SET generation = (SELECT value + 1 FROM generation WHERE id = 1)
            WHERE instance_id = NEW.instance_id;
    END;
CREATE TRIGGER latest_updated AFTER UPDATE OF timestamp, healthy, payload ON latest BEGIN
        UPDATE latest SET generation = (SELECT value + 1 FROM generation WHERE id = 1)
            WHERE instance_id = NEW.instance_id;
    END;
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('audit',2);
COMMIT;
PRAGMA user_version = 4;
