package sqlstore

// The schema, as an append-only list of migrations: migration i (from 1)
// brings the database to version i. A released migration is never edited;
// a change is a new migration at the end (new columns with defaults, new
// tables, new indexes). The same text runs on SQLite and PostgreSQL, with
// these words replaced per dialect:
//
//	{{id}}    an auto-incremented 64-bit primary key, never reused
//	{{blob}}  a byte string (BLOB, BYTEA)
//
// Times are BIGINT nanoseconds since the Unix epoch, UTC, 0 for none;
// booleans are INTEGER 0 or 1; uint64 values (the TPM clock, record
// numbers) are stored as their int64 bit pattern.
var migrations = []string{
	// 1: the fleet.
	`
CREATE TABLE reference_files (
	name        TEXT PRIMARY KEY,
	body        {{blob}} NOT NULL,
	fingerprint TEXT NOT NULL,
	updated     BIGINT NOT NULL
);

CREATE TABLE agents (
	id              {{id}},
	name            TEXT NOT NULL UNIQUE,
	url             TEXT NOT NULL DEFAULT '',
	agent_ca        TEXT NOT NULL DEFAULT '',
	ak              TEXT NOT NULL DEFAULT '',
	azure           INTEGER NOT NULL DEFAULT 0,
	vm_id           TEXT NOT NULL DEFAULT '',
	reference       TEXT REFERENCES reference_files(name),
	pcrs            TEXT NOT NULL,
	banks           TEXT NOT NULL,
	interval_ns     BIGINT NOT NULL,
	push            INTEGER NOT NULL DEFAULT 0,
	push_token_hash TEXT NOT NULL DEFAULT '',
	status          TEXT NOT NULL,
	reason          TEXT NOT NULL DEFAULT '',
	since           BIGINT NOT NULL,
	findings        {{blob}},
	checks          {{blob}},
	last_poll       BIGINT NOT NULL DEFAULT 0,
	next_due        BIGINT NOT NULL,
	failures        INTEGER NOT NULL DEFAULT 0,
	boot_known      INTEGER NOT NULL DEFAULT 0,
	boot_reset      BIGINT NOT NULL DEFAULT 0,
	boot_restart    BIGINT NOT NULL DEFAULT 0,
	boot_clock      BIGINT NOT NULL DEFAULT 0,
	boot_state      {{blob}},
	boot_refresh    INTEGER NOT NULL DEFAULT 0,
	version         BIGINT NOT NULL DEFAULT 1,
	lease_owner     TEXT NOT NULL DEFAULT '',
	lease_until     BIGINT NOT NULL DEFAULT 0,
	created         BIGINT NOT NULL
);
CREATE INDEX agents_due ON agents (next_due);
CREATE INDEX agents_reference ON agents (reference);
CREATE INDEX agents_status ON agents (status);

CREATE TABLE observations (
	agent_id        BIGINT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
	okey            TEXT NOT NULL,
	path_key        TEXT NOT NULL,
	path            TEXT NOT NULL,
	kind            TEXT NOT NULL,
	deleted         INTEGER NOT NULL,
	sha256          TEXT NOT NULL,
	manifest_digest TEXT NOT NULL,
	config_digest   TEXT NOT NULL,
	cause           TEXT NOT NULL,
	error           TEXT NOT NULL,
	record          BIGINT NOT NULL,
	latest          INTEGER NOT NULL,
	PRIMARY KEY (agent_id, okey)
);
CREATE INDEX observations_path ON observations (agent_id, path_key);

CREATE TABLE transitions (
	id         {{id}},
	agent_id   BIGINT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
	agent      TEXT NOT NULL,
	at         BIGINT NOT NULL,
	event      TEXT NOT NULL,
	from_state TEXT NOT NULL,
	to_state   TEXT NOT NULL,
	reason     TEXT NOT NULL,
	findings   {{blob}}
);
CREATE INDEX transitions_agent ON transitions (agent_id, id);

CREATE TABLE endpoints (
	url      TEXT PRIMARY KEY,
	declared INTEGER NOT NULL,
	enabled  INTEGER NOT NULL,
	disabled BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE deliveries (
	seq          {{id}},
	id           TEXT NOT NULL UNIQUE,
	endpoint     TEXT NOT NULL REFERENCES endpoints(url),
	transition   BIGINT NOT NULL,
	payload      {{blob}} NOT NULL,
	created      BIGINT NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt BIGINT NOT NULL,
	state        TEXT NOT NULL,
	last_status  INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint, seq);
CREATE INDEX deliveries_transition ON deliveries (transition);
`,
	// 2: replicas: push nonces in the database, so that a challenge from
	// one replica can be answered to another behind the same address.
	`
CREATE TABLE push_nonces (
	nonce    TEXT PRIMARY KEY,
	agent_id BIGINT NOT NULL,
	since    BIGINT NOT NULL,
	expires  BIGINT NOT NULL
);
CREATE INDEX push_nonces_agent ON push_nonces (agent_id, expires);
CREATE INDEX push_nonces_expires ON push_nonces (expires);
`,

	// ---- 3: enrollment (issue 13): the agents whose AK is enrolled through
	// their EK certificate or a cloud AK certificate. Kept as one migration
	// of its own: it only adds columns, so it may run after any other.
	`
ALTER TABLE agents ADD COLUMN ek_ca TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN ak_ca TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN enrollment {{blob}};
ALTER TABLE agents ADD COLUMN enrolled BIGINT NOT NULL DEFAULT 0;
`,
	// ---- end of enrollment.
}
