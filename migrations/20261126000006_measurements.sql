-- Wound measurements of a scan: one automatic row written when reconstruction finishes
-- (idempotent: a re-run of the finish hook replaces it), plus one row per clinician-drawn
-- outline (POST /v1/scans/{id}/measurements). Every value is in mm, mm² or mm³ with its
-- half-width `_pm` (the true value lies in value ± pm, docs/measurement.md).

CREATE TABLE scan_measurements (
    id                  uuid PRIMARY KEY,
    scan_id             uuid NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    method              text NOT NULL CHECK (method IN ('auto', 'polygon')),
    -- Polygon only: the keyframe the outline was drawn on, and the outline in its image
    -- coordinates ([[u, v], ...]).
    keyframe_seq        bigint CHECK (keyframe_seq >= 1),
    polygon             jsonb,
    outline_area_mm2    double precision NOT NULL,
    outline_area_mm2_pm double precision NOT NULL,
    bed_area_mm2        double precision NOT NULL,
    bed_area_mm2_pm     double precision NOT NULL,
    perimeter_mm        double precision NOT NULL,
    perimeter_mm_pm     double precision NOT NULL,
    length_mm           double precision NOT NULL,
    length_mm_pm        double precision NOT NULL,
    width_mm            double precision NOT NULL,
    width_mm_pm         double precision NOT NULL,
    max_depth_mm        double precision NOT NULL,
    max_depth_mm_pm     double precision NOT NULL,
    mean_depth_mm       double precision NOT NULL,
    mean_depth_mm_pm    double precision NOT NULL,
    volume_mm3          double precision NOT NULL,
    volume_mm3_pm       double precision NOT NULL,
    skin_model          text NOT NULL CHECK (skin_model IN ('quadratic', 'quartic')),
    skin_residual_mm    double precision NOT NULL,
    missing_fraction    double precision NOT NULL,
    -- The fused surface in the blob store (PLY and binary glTF) and their SHA-256.
    mesh_ply_key        text,
    mesh_ply_sha256     text CHECK (length(mesh_ply_sha256) = 64),
    mesh_glb_key        text,
    mesh_glb_sha256     text CHECK (length(mesh_glb_sha256) = 64),
    -- Who drew the polygon (NULL for the automatic row).
    created_by          uuid REFERENCES users(id),
    created_at          timestamptz NOT NULL,
    CHECK ((method = 'polygon') = (keyframe_seq IS NOT NULL AND polygon IS NOT NULL))
);
CREATE INDEX scan_measurements_scan ON scan_measurements (scan_id, created_at, id);
CREATE UNIQUE INDEX scan_measurements_one_auto ON scan_measurements (scan_id) WHERE method = 'auto';
