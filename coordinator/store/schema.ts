/**
 * The coordinator's SQLite schema as numbered migrations (PRAGMA user_version
 * says which have run). A migration is append-only: never edit one that has
 * shipped, add the next.
 */
export const MIGRATIONS: string[] = [
  // 1: the first schema.
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE admin_credentials (
    id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, created INTEGER NOT NULL
  );
  CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    reusable INTEGER NOT NULL,
    uses_left INTEGER,            -- NULL = unlimited (reusable without --uses)
    ephemeral INTEGER NOT NULL,
    expires INTEGER,              -- wall ms; NULL = never
    tags TEXT NOT NULL,           -- JSON array
    created INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    joins INTEGER NOT NULL DEFAULT 0
  );
  CREATE TABLE nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_key TEXT NOT NULL UNIQUE,
    disco_key TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    ip_index INTEGER NOT NULL UNIQUE,
    ipv4 TEXT NOT NULL UNIQUE,
    ipv6 TEXT NOT NULL UNIQUE,
    tags TEXT NOT NULL,
    ephemeral INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    endpoints TEXT NOT NULL,      -- JSON array of "ip:port"
    nat_type TEXT NOT NULL,
    token_id TEXT
  );
  CREATE TABLE free_ip_indexes (ip_index INTEGER PRIMARY KEY);
  `,
  // 2: the change feed (peer-map versions kept on disk, so agents resume across restarts and
  // replicas) and session ownership (which coordinator process serves each online node).
  `
  ALTER TABLE nodes ADD COLUMN online_replica TEXT;
  CREATE TABLE peer_changes (version INTEGER PRIMARY KEY, changes TEXT NOT NULL, origin TEXT NOT NULL DEFAULT '');
  CREATE TABLE replicas (id TEXT PRIMARY KEY, beat INTEGER NOT NULL);
  -- Nothing says which nodes were online before this schema: move the version on, so every
  -- agent resuming from an older one gets a snapshot.
  UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'version';
  `,
];
