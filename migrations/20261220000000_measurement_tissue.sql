-- Issue #26: each measurement carries the wound bed's tissue composition inside its outline
-- (granulation, slough, eschar, epithelial, other: areas, percentages and their ±, the
-- calibration and the classifier, as `docs/api.md` shows it), or the stable code of why it
-- has none (`no_colour_frames`, `too_little_colour`, ...). Exactly one of the two is set.
-- `tissue_at` is when the composition was computed: a recomputation (e.g. with a clinician's
-- corrections) replaces `tissue` and its reason and moves `tissue_at`, never the figures.
-- Rows measured before colour was analysed say `not_analysed`.
ALTER TABLE scan_measurements
  ADD COLUMN tissue jsonb,
  ADD COLUMN tissue_reason text DEFAULT 'not_analysed',
  ADD COLUMN tissue_at timestamptz;

ALTER TABLE scan_measurements
  ADD CONSTRAINT scan_measurements_tissue_or_reason CHECK ((tissue IS NULL) <> (tissue_reason IS NULL)),
  ADD CONSTRAINT scan_measurements_tissue_is_object CHECK (tissue IS NULL OR jsonb_typeof(tissue) = 'object');
