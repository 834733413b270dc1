-- Issue #24, wounds as records: one row per wound of a patient (where it is, what caused it,
-- its stage, its status over time), versioned for `If-Match` like the patient record; and the
-- clinician's marks on its assessments (every completed measurement of one of its scans): the
-- baseline the healing metrics start from, and assessments excluded with a reason (kept, never
-- deleted: an exclusion can be lifted, and both are audited).

CREATE TABLE wounds (
    id              uuid PRIMARY KEY,
    patient_id      uuid NOT NULL REFERENCES patients(id),
    -- SNOMED CT body-structure concept (NULL for wounds made from a scan's free-text site).
    site_code       text CHECK (site_code ~ '^[0-9]{6,18}$'),
    site_display    text NOT NULL CHECK (length(site_display) BETWEEN 1 AND 200),
    laterality      text NOT NULL DEFAULT 'unspecified'
        CHECK (laterality IN ('left', 'right', 'bilateral', 'midline', 'unspecified')),
    -- A point on the dashboard's body map, both in 0..1 (or both NULL).
    body_map_x      double precision CHECK (body_map_x BETWEEN 0 AND 1),
    body_map_y      double precision CHECK (body_map_y BETWEEN 0 AND 1),
    aetiology       text NOT NULL
        CHECK (aetiology IN ('pressure', 'diabetic_foot', 'venous', 'arterial', 'surgical', 'trauma', 'burn', 'other')),
    onset_date      date,
    -- Stage or category as the aetiology defines it (validated by the server); NULL: none.
    stage           text CHECK (stage ~ '^[a-z0-9_]{1,32}$'),
    status          text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'healing', 'healed', 'amputated', 'closed_other')),
    -- The date the current status took effect.
    status_date     date NOT NULL,
    -- Every status the wound has had: [{status, date, recorded_by, recorded_at}], oldest first.
    status_history  jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(status_history) = 'array'),
    -- The assessment the healing metrics start from (NULL: the first one not excluded).
    baseline_measurement_id uuid REFERENCES scan_measurements(id) ON DELETE SET NULL,
    recorded_by     uuid NOT NULL REFERENCES users(id),
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CHECK ((body_map_x IS NULL) = (body_map_y IS NULL))
);
CREATE INDEX wounds_patient ON wounds (patient_id, created_at, id);

CREATE TABLE wound_assessment_exclusions (
    measurement_id  uuid PRIMARY KEY REFERENCES scan_measurements(id) ON DELETE CASCADE,
    wound_id        uuid NOT NULL REFERENCES wounds(id),
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    excluded_by     uuid NOT NULL REFERENCES users(id),
    excluded_at     timestamptz NOT NULL
);
CREATE INDEX wound_assessment_exclusions_wound ON wound_assessment_exclusions (wound_id);
