-- Patient records: the full profile, clinical lists, consents, optimistic concurrency and
-- index-backed search (accent- and typo-tolerant names, birth date, MRN).

-- `unaccent()` is STABLE (its dictionary could change); an index needs an IMMUTABLE wrapper
-- that names the dictionary explicitly.
CREATE FUNCTION coh_unaccent(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT public.unaccent('public.unaccent'::regdictionary, $1) $$;

-- The normalised form names are searched and sorted by.
CREATE FUNCTION coh_search_name(family text, given text, middle text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(coh_unaccent(family || ' ' || given || coalesce(' ' || middle, ''))) $$;

ALTER TABLE patients
    ADD COLUMN organization_id     text NOT NULL DEFAULT 'default',
    ADD COLUMN mrn                 text,
    ADD COLUMN name_prefix         text,
    ADD COLUMN middle_name         text,
    ADD COLUMN name_suffix         text,
    ADD COLUMN sex                 text NOT NULL DEFAULT 'unknown'
        CHECK (sex IN ('male', 'female', 'other', 'unknown')),
    ADD COLUMN gender_identity     text,
    ADD COLUMN preferred_language  text,
    ADD COLUMN phone               text,
    ADD COLUMN email               text,
    ADD COLUMN address             jsonb,
    -- Encrypted envelopes (`v1:KEYID:…`, crypto::FieldKey); never plaintext.
    ADD COLUMN national_id_enc     text CHECK (national_id_enc LIKE 'v1:%'),
    ADD COLUMN notes_enc           text CHECK (notes_enc LIKE 'v1:%'),
    ADD COLUMN active              boolean NOT NULL DEFAULT true,
    ADD COLUMN deactivated_at      timestamptz,
    ADD COLUMN version             bigint NOT NULL DEFAULT 1,
    ADD COLUMN created_by          uuid REFERENCES users(id),
    ADD COLUMN search_name         text GENERATED ALWAYS AS (coh_search_name(family_name, given_name, middle_name)) STORED;

-- One MRN per organisation (NULLs — no MRN yet — are allowed many times).
CREATE UNIQUE INDEX patients_org_mrn ON patients (organization_id, mrn);
-- Keyset pagination order, and the name filter (trigram: typos; unaccented: accents).
CREATE INDEX patients_search_name_order ON patients (search_name, id);
-- fastupdate off: patients are created rarely and searched often; a pending list would make
-- the planner (rightly) distrust the index until the next vacuum.
CREATE INDEX patients_search_name_trgm ON patients USING gin (search_name gin_trgm_ops) WITH (fastupdate = off);
CREATE INDEX patients_birth_date ON patients (birth_date, search_name, id);
CREATE INDEX patients_mrn ON patients (mrn) WHERE mrn IS NOT NULL;

ALTER TABLE emergency_access
    ADD CONSTRAINT emergency_access_patient FOREIGN KEY (patient_id) REFERENCES patients(id);

-- Clinical lists, contacts, coverages and consents: one validated JSON document per entry
-- (the shape is fixed per kind by the server), versioned for `If-Match`.
CREATE TABLE patient_entries (
    id          uuid PRIMARY KEY,
    patient_id  uuid NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('allergy', 'medication', 'condition', 'coverage', 'contact', 'consent')),
    data        jsonb NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    created_by  uuid REFERENCES users(id),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX patient_entries_list ON patient_entries (patient_id, kind, created_at, id);
