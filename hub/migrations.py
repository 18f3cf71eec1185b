"""The hub database's schema: one named, ordered list of migrations, :data:`MIGRATIONS`.

Everything that opens the hub's file (the writer, the readers' checkpointer, forwarding's and
the CCTV linkage's local writers) reads this one list; no other module defines a table.

Rules:

1. A migration, once released, is never edited: a change is a new migration at the end of
   :data:`MIGRATIONS`. Migrations run in the list's order.
2. Each runs in its own transaction together with the record that it ran (sqlite-utils'
   ``_sqlite_migrations`` table, keyed by set and name).
3. The set names are history: the hub's core tables were ``jikimi.hub``, forwarding's
   ``jikimi.hub.forward`` and the CCTV evidence ``jikimi.hub.cctv``, when they were three lists.
   Each entry keeps its set and name, so a database made then upgrades cleanly now. A new
   migration goes in the ``jikimi.hub`` set.

Tables (DESIGN §6): sites, site_epochs (each outbox epoch's watermark), devices, latest,
records (the history, deduplicated by (site, epoch, seq)), history_agg (downsampled history),
quarantine, seq_gaps, alarms, alarm_transitions, incidents, commands, command_replies,
operations, operation_devices, exercises, operators, sessions and the hash-chained audit log
(append-only: triggers refuse UPDATE and DELETE); forwarding's ``fwd_*`` tables
(hub/forward/outbox.py) and ``cctv_evidence`` (hub/cctv.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlite_utils
from sqlite_utils.db import Database

from hub.errors import StoreError

CORE: Final = "jikimi.hub"
FORWARD: Final = "jikimi.hub.forward"
CCTV: Final = "jikimi.hub.cctv"


def m001_ingest(db: Database) -> None:
    db.execute(
        "CREATE TABLE sites ("
        " site TEXT PRIMARY KEY, area TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
        " state TEXT NOT NULL DEFAULT 'unknown', boot TEXT NOT NULL DEFAULT '', state_ts REAL,"
        " agent_version TEXT NOT NULL DEFAULT '', birth_ts REAL, models TEXT NOT NULL DEFAULT '[]',"
        " first_seen REAL NOT NULL, last_seen REAL NOT NULL,"
        " through_seq INTEGER NOT NULL DEFAULT 0, records INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute(
        "CREATE TABLE devices ("
        " site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, profile TEXT NOT NULL,"
        " profile_sha256 TEXT NOT NULL, points TEXT NOT NULL, updated_at REAL NOT NULL,"
        " PRIMARY KEY (site, device)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE latest ("
        " site TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,"
        " value TEXT NOT NULL, num REAL, quality TEXT NOT NULL, unit TEXT NOT NULL,"
        " ts REAL NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,"
        " stale INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (site, device, point)) WITHOUT ROWID"
    )
    # One row per record ever committed: the dedupe key is the primary key.
    db.execute(
        "CREATE TABLE records ("
        " site TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,"
        " received_at REAL NOT NULL, prio TEXT NOT NULL, historical INTEGER NOT NULL,"
        " device TEXT, point TEXT, value TEXT, num REAL, quality TEXT, body TEXT,"
        " PRIMARY KEY (site, seq)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX records_point ON records (site, device, point, ts) WHERE type = 'reading'")
    db.execute("CREATE INDEX records_other ON records (ts) WHERE type <> 'reading'")
    db.execute(
        "CREATE TABLE history_agg ("
        " site TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL, bucket REAL NOT NULL,"
        " n INTEGER NOT NULL, min REAL, max REAL, avg REAL,"
        " PRIMARY KEY (site, device, point, bucket)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE quarantine ("
        " id INTEGER PRIMARY KEY, received_at REAL NOT NULL, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, error TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE seq_gaps ("
        " id INTEGER PRIMARY KEY, site TEXT NOT NULL, closed_at REAL NOT NULL,"
        " through_seq INTEGER NOT NULL, missing INTEGER NOT NULL, how TEXT NOT NULL)"
    )


def m002_alarms(db: Database) -> None:
    db.execute(
        "CREATE TABLE incidents ("
        " id INTEGER PRIMARY KEY, area TEXT NOT NULL, opened_at REAL NOT NULL, closed_at REAL,"
        " state TEXT NOT NULL, title TEXT NOT NULL, closed_by TEXT, close_reason TEXT)"
    )
    db.execute(
        "CREATE TABLE alarms ("
        " id INTEGER PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,"
        " rule TEXT NOT NULL, area TEXT NOT NULL, priority TEXT NOT NULL, state TEXT NOT NULL,"
        " active INTEGER NOT NULL, message TEXT NOT NULL, raised_at REAL, changed_at REAL NOT NULL,"
        " shelved_until REAL, shelve_reason TEXT NOT NULL DEFAULT '',"
        " incident_id INTEGER REFERENCES incidents (id),"
        " UNIQUE (site, device, point, rule))"
    )
    db.execute("CREATE INDEX alarms_state ON alarms (state)")
    db.execute(
        "CREATE TABLE alarm_transitions ("
        " id INTEGER PRIMARY KEY, alarm_id INTEGER NOT NULL REFERENCES alarms (id), ts REAL NOT NULL,"
        " event TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,"
        " actor TEXT NOT NULL CHECK (actor <> ''), reason TEXT NOT NULL CHECK (reason <> ''))"
    )
    db.execute("CREATE INDEX alarm_transitions_alarm ON alarm_transitions (alarm_id, id)")


def m003_commands(db: Database) -> None:
    db.execute(
        "CREATE TABLE operations ("
        " id TEXT PRIMARY KEY, kind TEXT NOT NULL, area TEXT NOT NULL, issued_by TEXT NOT NULL,"
        " reason TEXT NOT NULL, created_at REAL NOT NULL, note TEXT NOT NULL DEFAULT '')"
    )
    db.execute(
        "CREATE TABLE commands ("
        " cmd_id TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, action TEXT NOT NULL,"
        " params TEXT NOT NULL, issued_by TEXT NOT NULL, approved_by TEXT NOT NULL DEFAULT '[]',"
        " reason TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',"
        " created_at REAL NOT NULL, issued_at REAL, not_after REAL, updated_at REAL NOT NULL,"
        " operation_id TEXT REFERENCES operations (id), wire TEXT)"
    )
    db.execute("CREATE INDEX commands_state ON commands (state)")
    db.execute("CREATE INDEX commands_operation ON commands (operation_id)")
    db.execute(
        "CREATE TABLE command_replies ("
        " id INTEGER PRIMARY KEY, cmd_id TEXT NOT NULL, site TEXT NOT NULL, seq INTEGER NOT NULL,"
        " status TEXT NOT NULL, reason TEXT NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX command_replies_cmd ON command_replies (cmd_id)")


def m004_people(db: Database) -> None:
    db.execute(
        "CREATE TABLE operators ("
        " username TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL,"
        " disabled INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE sessions ("
        " token_hash TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES operators (username),"
        " csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, remote TEXT NOT NULL)"
    )


def m005_audit(db: Database) -> None:
    db.execute(
        "CREATE TABLE audit ("
        " id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
        " target TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END"
    )


def m007_epochs(db: Database) -> None:
    """Seqs are per (site, outbox epoch) (DESIGN §3): the records' key gains the epoch; records
    and watermarks from before epochs are the legacy epoch 0."""
    db.execute(
        "CREATE TABLE records_by_epoch ("
        " site TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,"
        " received_at REAL NOT NULL, prio TEXT NOT NULL, historical INTEGER NOT NULL,"
        " device TEXT, point TEXT, value TEXT, num REAL, quality TEXT, body TEXT,"
        " PRIMARY KEY (site, epoch, seq)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO records_by_epoch (site, epoch, seq, type, ts, received_at, prio, historical, device, point,"
        " value, num, quality, body) SELECT site, 0, seq, type, ts, received_at, prio, historical, device, point,"
        " value, num, quality, body FROM records"
    )
    db.execute("DROP TABLE records")
    db.execute("ALTER TABLE records_by_epoch RENAME TO records")
    db.execute("CREATE INDEX records_point ON records (site, device, point, ts) WHERE type = 'reading'")
    db.execute("CREATE INDEX records_other ON records (ts) WHERE type <> 'reading'")
    # sites.epoch is the epoch the site last sent; sites.through_seq stays that epoch's watermark
    db.execute("ALTER TABLE sites ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "CREATE TABLE site_epochs ("
        " site TEXT NOT NULL, epoch INTEGER NOT NULL, through_seq INTEGER NOT NULL DEFAULT 0,"
        " first_seen REAL NOT NULL, last_seen REAL NOT NULL, records INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (site, epoch)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO site_epochs (site, epoch, through_seq, first_seen, last_seen, records)"
        " SELECT site, 0, through_seq, first_seen, last_seen, records FROM sites"
    )
    db.execute("ALTER TABLE seq_gaps ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")


def m008_forward_visibility(db: Database) -> None:
    """What forwarding did not send, counted by reason (persisted: they count real events), and
    the console alarm each escalation raised (hub/alerting.py rules 5-6)."""
    db.execute(
        "CREATE TABLE fwd_not_forwarded ("
        " reason TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE fwd_escalation_alarms ("
        " delivery_id INTEGER PRIMARY KEY, alarm_id INTEGER NOT NULL REFERENCES alarms (id),"
        " raised_at REAL NOT NULL, settled_at REAL)"
    )
    db.execute("CREATE INDEX fwd_escalation_alarms_open ON fwd_escalation_alarms (delivery_id)"
               " WHERE settled_at IS NULL")


def m009_exercises(db: Database) -> None:
    """Exercises (DESIGN §3: a drill over an area), the exercise each command and operation
    belongs to, a self-test reply's per-point report, and each operation's plan per device."""
    db.execute(
        "CREATE TABLE exercises ("
        " id TEXT PRIMARY KEY, area TEXT NOT NULL, reason TEXT NOT NULL, started_by TEXT NOT NULL,"
        " started_at REAL NOT NULL, ended_by TEXT, ended_at REAL, end_reason TEXT NOT NULL DEFAULT '')"
    )
    db.execute("CREATE UNIQUE INDEX exercises_active ON exercises (area) WHERE ended_at IS NULL")
    db.execute("ALTER TABLE commands ADD COLUMN exercise_id TEXT REFERENCES exercises (id)")
    db.execute("ALTER TABLE operations ADD COLUMN exercise_id TEXT REFERENCES exercises (id)")
    db.execute("ALTER TABLE command_replies ADD COLUMN report TEXT NOT NULL DEFAULT '[]'")
    db.execute(
        "CREATE TABLE operation_devices ("
        " operation_id TEXT NOT NULL REFERENCES operations (id), n INTEGER NOT NULL, site TEXT NOT NULL,"
        " device TEXT NOT NULL, kind TEXT NOT NULL, action TEXT NOT NULL, params TEXT NOT NULL,"
        " cmd_id TEXT REFERENCES commands (cmd_id), reason TEXT NOT NULL DEFAULT '',"
        " PRIMARY KEY (operation_id, n)) WITHOUT ROWID"
    )


def m001_outbox(db: Database) -> None:
    db.execute(
        "CREATE TABLE fwd_threads ("
        " key TEXT PRIMARY KEY, event_id TEXT NOT NULL, open INTEGER NOT NULL, refs TEXT NOT NULL,"
        " recipients TEXT NOT NULL, updated_at REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE fwd_messages ("
        " identifier TEXT PRIMARY KEY, notice_key TEXT NOT NULL UNIQUE, thread TEXT NOT NULL,"
        " event_id TEXT NOT NULL, msg_type TEXT NOT NULL, sent TEXT NOT NULL, source TEXT NOT NULL,"
        " area TEXT NOT NULL, priority TEXT NOT NULL, site TEXT NOT NULL, headline TEXT NOT NULL,"
        " created_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX fwd_messages_thread ON fwd_messages (thread, created_at)")
    db.execute(
        "CREATE TABLE fwd_payloads ("
        " identifier TEXT NOT NULL REFERENCES fwd_messages (identifier), variant TEXT NOT NULL,"
        " content_type TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (identifier, variant))"
    )
    db.execute(
        "CREATE TABLE fwd_deliveries ("
        " id INTEGER PRIMARY KEY, identifier TEXT NOT NULL REFERENCES fwd_messages (identifier),"
        " thread TEXT NOT NULL, recipient TEXT NOT NULL, variant TEXT NOT NULL,"
        " state TEXT NOT NULL CHECK (state IN ('pending', 'acked', 'failed')),"
        " attempts INTEGER NOT NULL DEFAULT 0, round_start INTEGER NOT NULL DEFAULT 0,"
        " next_at REAL NOT NULL, created_at REAL NOT NULL,"
        " escalate_at REAL, escalated_at REAL, escalation_of INTEGER REFERENCES fwd_deliveries (id),"
        " acked_at REAL, failed_at REAL, last_error TEXT NOT NULL DEFAULT '',"
        " UNIQUE (identifier, recipient))"
    )
    db.execute("CREATE INDEX fwd_deliveries_due ON fwd_deliveries (state, next_at)")
    db.execute("CREATE INDEX fwd_deliveries_order ON fwd_deliveries (recipient, thread, state, id)")
    db.execute(
        "CREATE INDEX fwd_deliveries_escalation ON fwd_deliveries (escalate_at)"
        " WHERE escalated_at IS NULL AND state <> 'acked'"
    )
    db.execute(
        "CREATE TABLE fwd_attempts ("
        " id INTEGER PRIMARY KEY, delivery_id INTEGER NOT NULL REFERENCES fwd_deliveries (id),"
        " n INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL, outcome TEXT,"
        " http_status INTEGER, error TEXT NOT NULL DEFAULT '', UNIQUE (delivery_id, n))"
    )
    db.execute("CREATE INDEX fwd_attempts_open ON fwd_attempts (delivery_id) WHERE finished_at IS NULL")


def m001_evidence(db: Database) -> None:
    db.execute(
        "CREATE TABLE cctv_evidence ("
        " id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, sha1 TEXT NOT NULL, camera_id TEXT NOT NULL,"
        " preset INTEGER, ref TEXT NOT NULL, captured_at REAL NOT NULL, expires_at REAL NOT NULL,"
        " size INTEGER NOT NULL, mime TEXT NOT NULL, path TEXT NOT NULL,"
        " distance_m REAL NOT NULL, bearing_deg REAL NOT NULL, jurisdiction TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX cctv_evidence_ref ON cctv_evidence (ref)")
    db.execute("CREATE INDEX cctv_evidence_expiry ON cctv_evidence (expires_at)")


def m006_quarantine_bounds(db: Database) -> None:
    # the quarantine becomes bounded (hub/quarantine.py): payloads truncated, so the original size
    # is kept; the site and the reason are shown to operators and counted.
    db.execute("ALTER TABLE quarantine ADD COLUMN site TEXT")
    db.execute("ALTER TABLE quarantine ADD COLUMN reason TEXT NOT NULL DEFAULT 'malformed'")
    db.execute("ALTER TABLE quarantine ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE quarantine SET size = length(payload)")
    db.execute("CREATE INDEX quarantine_received ON quarantine (received_at)")


def m010_alarm_sources(db: Database) -> None:
    """Alarms from the edge's own events (shared/site_events.py) beside the rules' (``source``),
    and alarms judged from late data (DESIGN §6): ``late`` marks an alarm whose current episode
    was raised or cleared from a record that came late, ``cond_ts`` is the record time of the last
    change of its condition (hub/alarmdesk.py, the ordering rules), and each transition says
    whether it came late. The site view lists a site's recent events by time."""
    db.execute("ALTER TABLE alarms ADD COLUMN source TEXT NOT NULL DEFAULT 'rule'")
    db.execute("ALTER TABLE alarms ADD COLUMN late INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE alarms ADD COLUMN cond_ts REAL")
    db.execute("ALTER TABLE alarm_transitions ADD COLUMN late INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX records_site_events ON records (site, ts) WHERE type = 'event'")


def m011_record_origins(db: Database) -> None:
    """A record an edge's outbox carried into a new epoch keeps where it was first assigned, its
    origin (DESIGN §3; hub/intake.py rule 10): the intake looks a carried record up by it, so a
    record committed under its old epoch is not stored again."""
    db.execute("ALTER TABLE records ADD COLUMN origin_epoch INTEGER")
    db.execute("ALTER TABLE records ADD COLUMN origin_seq INTEGER")
    db.execute("CREATE INDEX records_origin ON records (site, origin_epoch, origin_seq)"
               " WHERE origin_epoch IS NOT NULL")


def m013_alarm_drivers(db: Database) -> None:
    """A network-forecast alarm (hub/forecastdesk.py) keeps the neighbours that drove it, as JSON
    (site, distance, crossing age, depth, rise) at its last raise; NULL for every other alarm."""
    db.execute("ALTER TABLE alarms ADD COLUMN drivers TEXT")


def m014_province_requests(db: Database) -> None:
    """Requests of the province to this city (hub/requestdesk.py): each once, with its answer."""
    db.execute("""CREATE TABLE province_requests (
        request_id TEXT PRIMARY KEY, action TEXT NOT NULL, area TEXT NOT NULL, reason TEXT NOT NULL,
        requested_by TEXT NOT NULL, requested_at REAL NOT NULL, not_after REAL NOT NULL,
        received_at REAL NOT NULL, state TEXT NOT NULL, op_id TEXT, decided_by TEXT,
        why TEXT NOT NULL DEFAULT '', decided_at REAL)""")


@dataclass(frozen=True)
class Migration:
    set: str
    fn: Callable[[Database], None]

    @property
    def name(self) -> str:
        return self.fn.__name__


def m012_camera_links(db: Database) -> None:
    # Expiring, revocable view links to one camera for 112/119 (hub/liveview.py rule 6): only the
    # token's SHA-256 is kept.
    db.execute(
        "CREATE TABLE camera_links ("
        " id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, camera_id TEXT NOT NULL,"
        " recipient TEXT NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL,"
        " expires_at REAL NOT NULL, revoked_at REAL, revoked_by TEXT)"
    )


MIGRATIONS: Final = (
    Migration(CORE, m001_ingest),
    Migration(CORE, m002_alarms),
    Migration(CORE, m003_commands),
    Migration(CORE, m004_people),
    Migration(CORE, m005_audit),
    Migration(FORWARD, m001_outbox),
    Migration(CCTV, m001_evidence),
    Migration(CORE, m006_quarantine_bounds),
    Migration(CORE, m007_epochs),
    Migration(CORE, m008_forward_visibility),
    Migration(CORE, m009_exercises),
    Migration(CORE, m010_alarm_sources),
    Migration(CORE, m011_record_origins),
    Migration(CORE, m012_camera_links),
    Migration(CORE, m013_alarm_drivers),
    Migration(CORE, m014_province_requests),
)
"""The hub database's schema, in order (rule 1)."""


def upgrade(conn: sqlite3.Connection) -> None:
    """Apply the pending migrations of :data:`MIGRATIONS`, in order, each in its own transaction."""
    db = Database(conn)
    applied: dict[str, set[str]] = {}
    for m in MIGRATIONS:
        done = applied.get(m.set)
        if done is None:
            done = applied[m.set] = {a.name for a in sqlite_utils.Migrations(m.set).applied(db)}
        if m.name in done:
            continue
        one = sqlite_utils.Migrations(m.set)
        one(name=m.name)(m.fn)
        one.apply(db)
        done.add(m.name)


def connect(path: Path, *, readonly: bool = False, migrate: bool = True) -> sqlite3.Connection:
    """A connection with the hub's settings; the writer's also runs pending migrations.

    Autocommit mode (``isolation_level=None``): transactions are explicit ``BEGIN IMMEDIATE``.
    WAL with ``synchronous=FULL``: a commit the hub acknowledges to an edge survives power loss.
    """
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            return conn
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if migrate:
            upgrade(conn)
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open the hub database: {exc}") from exc
