-- Issue #23, honest failure: what a scan's reconstruction came to, one row per scan,
-- written by the finish step (an idempotent upsert: a re-run of the finish converges).
--
-- `measured`: the automatic segmentation found the wound (its figures are the scan's `auto`
-- row in scan_measurements). `needs_outline`: the surface was built and its mesh stored, but
-- the automatic measurement failed; `reason_code` says why in a stable string
-- (docs/api.md: no_depression, wound_exceeds_scan_region, rim_not_seen, not_enough_surface,
-- measurement_failed), `reason` in words, and `suggested_keyframe` names the accepted frame a
-- clinician should draw the outline on: {seq, width, height, k[9] row-major intrinsics,
-- pose[16] row-major world-from-camera (OpenCV axes)}.
--
-- The mesh lives here (not only on the measurement rows) so that it is served, and a later
-- clinician outline refers to it, whether or not the automatic measurement succeeded.

CREATE TABLE scan_reconstructions (
    scan_id             uuid PRIMARY KEY REFERENCES scans(id) ON DELETE CASCADE,
    outcome             text NOT NULL CHECK (outcome IN ('measured', 'needs_outline')),
    reason_code         text CHECK (reason_code ~ '^[a-z_]{1,64}$'),
    reason              text CHECK (length(reason) <= 500),
    suggested_keyframe  jsonb CHECK (jsonb_typeof(suggested_keyframe) = 'object'),
    mesh_ply_key        text NOT NULL,
    mesh_ply_sha256     text NOT NULL CHECK (length(mesh_ply_sha256) = 64),
    mesh_glb_key        text NOT NULL,
    mesh_glb_sha256     text NOT NULL CHECK (length(mesh_glb_sha256) = 64),
    created_at          timestamptz NOT NULL,
    -- A reason exactly when the automatic measurement failed.
    CHECK ((outcome = 'needs_outline') = (reason_code IS NOT NULL AND reason IS NOT NULL)),
    CHECK (outcome = 'needs_outline' OR suggested_keyframe IS NULL)
);

-- Scans reconstructed before this table: every automatic measurement row with its mesh is
-- a `measured` reconstruction. (A scan whose automatic measurement failed left no row in
-- PostgreSQL, only its MongoDB document; the API answers those `needs_outline` without a
-- mesh, see docs/api.md.)
INSERT INTO scan_reconstructions
    (scan_id, outcome, mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_at)
SELECT scan_id, 'measured', mesh_ply_key, mesh_ply_sha256, mesh_glb_key, mesh_glb_sha256, created_at
  FROM scan_measurements
 WHERE method = 'auto'
   AND mesh_ply_key IS NOT NULL AND mesh_ply_sha256 IS NOT NULL
   AND mesh_glb_key IS NOT NULL AND mesh_glb_sha256 IS NOT NULL
ON CONFLICT (scan_id) DO NOTHING;
