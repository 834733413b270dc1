-- Capture links: a single-use code that opens one scan on the patient's phone
-- (`POST /v1/scans/{id}/capture-link`, `POST /v1/capture/redeem`; docs/security.md,
-- "Capture links"). Only the code's SHA-256 is stored. Redeeming it starts a capture
-- session: a session of the scan's patient confined to that scan (`sessions.capture_scan_id`).

ALTER TABLE sessions ADD COLUMN capture_scan_id uuid REFERENCES scans(id) ON DELETE CASCADE;

CREATE TABLE capture_codes (
    -- hex SHA-256 of the code as handed out
    code_hash   text PRIMARY KEY CHECK (length(code_hash) = 64),
    scan_id     uuid NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    -- the user the code acts for: the scan's patient
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_by  uuid NOT NULL REFERENCES users(id),
    created_at  timestamptz NOT NULL,
    -- a newer link for the same scan moves an unused code's expiry to its own creation
    expires_at  timestamptz NOT NULL CHECK (expires_at >= created_at),
    used_at     timestamptz,
    -- the capture session the code was redeemed for (revoked if the code is presented again)
    session_id  uuid REFERENCES sessions(id) ON DELETE SET NULL
);
CREATE INDEX capture_codes_unused ON capture_codes (scan_id) WHERE used_at IS NULL;
CREATE INDEX capture_codes_expiry ON capture_codes (expires_at);
