-- Issue #26: a clinician's tissue corrections. Each row is a region drawn on a keyframe of a
-- measured scan and the class its wound surface really is; the measurement's tissue
-- composition is recomputed with every correction of it applied (`scan_measurements.tissue`
-- replaced, `tissue_at` moved). `region_world` is the region on the skin (world metres) and
-- `samples` the classifier's view of the surface inside it (calibrated colour features):
-- together with `class`, the labelled training data `GET /v1/admin/tissue-corrections.ndjson`
-- exports. No patient data beyond the ids.
CREATE TABLE tissue_corrections (
    id              uuid PRIMARY KEY,
    measurement_id  uuid NOT NULL REFERENCES scan_measurements(id) ON DELETE CASCADE,
    scan_id         uuid NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    keyframe_seq    bigint NOT NULL CHECK (keyframe_seq >= 0),
    polygon         jsonb NOT NULL CHECK (jsonb_typeof(polygon) = 'array'),
    class           text NOT NULL CHECK (class IN ('granulation', 'slough', 'eschar', 'epithelial', 'other')),
    region_world    jsonb NOT NULL CHECK (jsonb_typeof(region_world) = 'array'),
    samples         jsonb NOT NULL CHECK (jsonb_typeof(samples) = 'array'),
    -- the classifier whose view `samples` are
    classifier      text,
    created_by      uuid NOT NULL REFERENCES users(id),
    created_at      timestamptz NOT NULL
);
CREATE INDEX tissue_corrections_measurement ON tissue_corrections (measurement_id, created_at, id);
CREATE INDEX tissue_corrections_created ON tissue_corrections (created_at, id);
