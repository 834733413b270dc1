-- Wound scans: the scan record and its lifecycle, the chunk objects holding raw frames in
-- the blob store, and the per-frame index (the system of record for what was acked).

CREATE TABLE scans (
    id           uuid PRIMARY KEY,
    patient_id   uuid NOT NULL REFERENCES patients(id),
    consult_id   uuid,
    body_site    text NOT NULL,
    status       text NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'streaming', 'processing', 'complete', 'failed', 'cancelled')),
    -- Every frame 1..=acked_seq is durable (blob + index); 0: none.
    acked_seq    bigint NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    created_by   uuid NOT NULL REFERENCES users(id),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- When the stream finished (status moved to processing).
    finished_at  timestamptz
);
CREATE INDEX scans_patient ON scans (patient_id, created_at DESC, id);

-- One chunk object per row; the key is deterministic per (scan, first seq, last seq), so a
-- retried write lands on the same row.
CREATE TABLE scan_chunks (
    key      text PRIMARY KEY,
    scan_id  uuid NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    sha256   text NOT NULL CHECK (length(sha256) = 64),
    size     bigint NOT NULL CHECK (size >= 0)
);
CREATE INDEX scan_chunks_scan ON scan_chunks (scan_id);

CREATE TABLE scan_frames (
    scan_id      uuid NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq >= 1),
    chunk_key    text NOT NULL REFERENCES scan_chunks(key),
    "offset"     bigint NOT NULL CHECK ("offset" >= 0),
    length       bigint NOT NULL CHECK (length > 0),
    sha256       text NOT NULL CHECK (length(sha256) = 64),
    -- Phone capture time as sent (microseconds), and as a timestamp when plausible.
    captured_us  bigint NOT NULL,
    captured_at  timestamptz,
    PRIMARY KEY (scan_id, seq)
);
