-- Booking: schedules, appointment types, appointments (holds and bookings), waitlist, outbox.
--
-- Double booking is impossible by construction: `appointments_no_overlap` excludes two live
-- rows of one clinician whose blocked ranges (the appointment plus its buffers) overlap.
-- The blocked range is stored (`block_start`, `block_end`) because `timestamptz - interval`
-- is only STABLE and exclusion-constraint expressions must be IMMUTABLE.
--
-- Holds are rows with status 'held' and an `expires_at`. The constraint cannot read the
-- clock, so an expired hold keeps its row live until it is swept: every booking attempt
-- first marks the expired holds that overlap its range 'expired' in the same transaction
-- (row locks make concurrent sweeps agree), and a background sweeper does the rest. The
-- constraint therefore holds across any number of nodes; nothing depends on a node's memory.

CREATE TABLE schedules (
    clinician_id     uuid PRIMARY KEY REFERENCES users(id),
    tz               text NOT NULL,
    horizon_days     integer NOT NULL DEFAULT 60 CHECK (horizon_days BETWEEN 1 AND 730),
    min_notice_min   integer NOT NULL DEFAULT 0 CHECK (min_notice_min BETWEEN 0 AND 43200),
    updated_at       timestamptz NOT NULL
);

-- Weekly availability in the clinician's zone; weekday 1 = Monday … 7 = Sunday (ISO).
CREATE TABLE schedule_rules (
    id           uuid PRIMARY KEY,
    clinician_id uuid NOT NULL REFERENCES schedules(clinician_id) ON DELETE CASCADE,
    weekday      smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time   time NOT NULL,
    end_time     time NOT NULL,
    CHECK (end_time > start_time)
);
CREATE INDEX schedule_rules_clinician ON schedule_rules (clinician_id);

-- Dated exceptions: 'off' removes [start,end) (the whole day when both are null), 'extra' adds.
CREATE TABLE schedule_exceptions (
    id           uuid PRIMARY KEY,
    clinician_id uuid NOT NULL REFERENCES schedules(clinician_id) ON DELETE CASCADE,
    day          date NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('off', 'extra')),
    start_time   time,
    end_time     time,
    CHECK ((start_time IS NULL AND end_time IS NULL AND kind = 'off') OR (start_time IS NOT NULL AND end_time > start_time))
);
CREATE INDEX schedule_exceptions_clinician ON schedule_exceptions (clinician_id, day);

CREATE TABLE appointment_types (
    id                 uuid PRIMARY KEY,
    clinician_id       uuid NOT NULL REFERENCES users(id),
    name               text NOT NULL,
    duration_min       integer NOT NULL CHECK (duration_min BETWEEN 5 AND 480),
    buffer_before_min  integer NOT NULL DEFAULT 0 CHECK (buffer_before_min BETWEEN 0 AND 240),
    buffer_after_min   integer NOT NULL DEFAULT 0 CHECK (buffer_after_min BETWEEN 0 AND 240),
    modality           text NOT NULL CHECK (modality IN ('telehealth', 'in_person')),
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL
);
CREATE INDEX appointment_types_clinician ON appointment_types (clinician_id);

CREATE TABLE appointments (
    id               uuid PRIMARY KEY,
    clinician_id     uuid NOT NULL REFERENCES users(id),
    patient_id       uuid NOT NULL REFERENCES patients(id),
    type_id          uuid NOT NULL REFERENCES appointment_types(id),
    modality         text NOT NULL,
    start_at         timestamptz NOT NULL,
    end_at           timestamptz NOT NULL,
    block_start      timestamptz NOT NULL,
    block_end        timestamptz NOT NULL,
    -- held → booked → (cancelled | no_show); held → (expired | cancelled)
    status           text NOT NULL CHECK (status IN ('held', 'booked', 'cancelled', 'expired', 'no_show')),
    expires_at       timestamptz,
    idempotency_key  text,
    created_by       uuid NOT NULL REFERENCES users(id),
    cancel_reason    text,
    cancelled_by     uuid REFERENCES users(id),
    rescheduled_from uuid REFERENCES appointments(id),
    waitlist_id      uuid,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CHECK (end_at > start_at),
    CHECK (block_start <= start_at AND block_end >= end_at),
    CHECK (status <> 'held' OR expires_at IS NOT NULL),
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        clinician_id WITH =,
        tstzrange(block_start, block_end, '[)') WITH &&
    ) WHERE (status IN ('held', 'booked', 'no_show'))
);
CREATE UNIQUE INDEX appointments_idempotency ON appointments (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointments_patient ON appointments (patient_id, start_at);
CREATE INDEX appointments_clinician ON appointments (clinician_id, start_at);
CREATE INDEX appointments_live_holds ON appointments (expires_at) WHERE status = 'held';

CREATE TABLE waitlist (
    id             uuid PRIMARY KEY,
    clinician_id   uuid NOT NULL REFERENCES users(id),
    patient_id     uuid NOT NULL REFERENCES patients(id),
    type_id        uuid NOT NULL REFERENCES appointment_types(id),
    from_at        timestamptz NOT NULL,
    to_at          timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('waiting', 'offered', 'claimed', 'cancelled')),
    offered_appointment_id uuid REFERENCES appointments(id),
    offers_made    integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CHECK (to_at > from_at)
);
CREATE INDEX waitlist_queue ON waitlist (clinician_id, created_at) WHERE status = 'waiting';
-- Offers a patient let lapse are not offered to them again for the same slot.
CREATE TABLE waitlist_declined (
    waitlist_id uuid NOT NULL REFERENCES waitlist(id) ON DELETE CASCADE,
    start_at    timestamptz NOT NULL,
    PRIMARY KEY (waitlist_id, start_at)
);

-- Booking events in commit order for integrations (`seq` is the cursor).
CREATE TABLE booking_outbox (
    seq            bigserial PRIMARY KEY,
    at             timestamptz NOT NULL,
    kind           text NOT NULL,
    appointment_id uuid,
    clinician_id   uuid NOT NULL,
    patient_id     uuid,
    payload        jsonb NOT NULL
);
