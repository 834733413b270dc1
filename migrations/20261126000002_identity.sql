-- Identity: users, credentials, sessions, MFA, emergency access, and the append-only,
-- hash-chained audit trail.

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    email           text NOT NULL UNIQUE CHECK (email = lower(email)),
    display_name    text NOT NULL,
    role            text NOT NULL CHECK (role IN ('patient', 'clinician', 'admin')),
    password_hash   text NOT NULL,
    disabled_at     timestamptz,
    totp_secret     text,              -- encrypted envelope (crypto::FieldKey) once enrolled or pending
    totp_enabled    boolean NOT NULL DEFAULT false,
    totp_last_step  bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE TABLE recovery_codes (
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   text NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- One row per login: the refresh-token family. Tokens are opaque; only keyed hashes are stored.
CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_hash         text NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz,
    revoked_reason      text,
    mfa_verified        boolean NOT NULL DEFAULT false,
    ip                  text,
    user_agent          text
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    token_hash  text PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE emergency_access (
    id            uuid PRIMARY KEY,
    clinician_id  uuid NOT NULL REFERENCES users(id),
    patient_id    uuid NOT NULL,
    reason        text NOT NULL,
    granted_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX emergency_access_lookup ON emergency_access (clinician_id, patient_id, expires_at);

-- The audit trail. Rows are only ever inserted; each row's hash covers its fields and the
-- previous row's hash, so an edit anywhere breaks the chain from that row on.
CREATE TABLE audit_log (
    id           bigint PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor_id     uuid,
    actor_role   text,
    action       text NOT NULL,
    target_type  text,
    target_id    text,
    outcome      text NOT NULL,
    ip           text,
    request_id   text,
    details      text NOT NULL DEFAULT '{}',
    prev_hash    text NOT NULL,
    hash         text NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id);
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Minimal patient record created at registration; the patient-records work extends it.
CREATE TABLE patients (
    id          uuid PRIMARY KEY,
    user_id     uuid UNIQUE REFERENCES users(id),
    given_name  text NOT NULL,
    family_name text NOT NULL,
    birth_date  date NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Care teams: which clinicians may see which patients.
CREATE TABLE care_team (
    patient_id   uuid NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
    clinician_id uuid NOT NULL REFERENCES users(id),
    role         text NOT NULL DEFAULT 'clinician',
    added_at     timestamptz NOT NULL,
    PRIMARY KEY (patient_id, clinician_id)
);
CREATE INDEX care_team_clinician ON care_team (clinician_id);
