-- Video consults: the consult, its participants (with admission state), the room's ordered
-- event log, and the webhook delivery state of each event.
--
-- The `Room` actor owning a consult is the only writer of its participants and events; each
-- event row is written in the same transaction as the participant change it records, so the
-- log and the state never disagree. `seq` is the per-room sequence number (1, 2, 3, … no gaps).

CREATE TABLE consults (
    id               uuid PRIMARY KEY,
    -- Set when the consult belongs to an appointment; at most one consult per appointment.
    appointment_id   uuid UNIQUE REFERENCES appointments(id),
    clinician_id     uuid NOT NULL REFERENCES users(id),
    patient_id       uuid REFERENCES patients(id),
    -- open → live (first join) → ended
    status           text NOT NULL CHECK (status IN ('open', 'live', 'ended')),
    scheduled_start  timestamptz,
    created_by       uuid NOT NULL REFERENCES users(id),
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    end_reason       text
);
CREATE INDEX consults_clinician ON consults (clinician_id, created_at);
CREATE INDEX consults_patient ON consults (patient_id, created_at);

CREATE TABLE consult_participants (
    id             uuid PRIMARY KEY,
    consult_id     uuid NOT NULL REFERENCES consults(id) ON DELETE CASCADE,
    user_id        uuid NOT NULL REFERENCES users(id),
    role           text NOT NULL CHECK (role IN ('host', 'patient', 'interpreter', 'family', 'clinician')),
    state          text NOT NULL CHECK (state IN ('invited', 'waiting', 'admitted', 'denied', 'left', 'removed')),
    invited_by     uuid REFERENCES users(id),
    checked_in_at  timestamptz,
    admitted_at    timestamptz,
    joined_at      timestamptz,
    left_at        timestamptz,
    updated_at     timestamptz NOT NULL,
    UNIQUE (consult_id, user_id)
);
CREATE INDEX consult_participants_user ON consult_participants (user_id);

CREATE TABLE consult_events (
    -- Global delivery order for the webhook dispatcher; per consult it follows `seq`.
    id               bigserial PRIMARY KEY,
    consult_id       uuid NOT NULL REFERENCES consults(id) ON DELETE CASCADE,
    seq              bigint NOT NULL CHECK (seq >= 1),
    kind             text NOT NULL,
    body             jsonb NOT NULL,
    at               timestamptz NOT NULL,
    webhook_attempts integer NOT NULL DEFAULT 0,
    webhook_next_at  timestamptz,
    webhook_done_at  timestamptz,
    webhook_error    text,
    UNIQUE (consult_id, seq)
);
CREATE INDEX consult_events_pending ON consult_events (id) WHERE webhook_done_at IS NULL;
