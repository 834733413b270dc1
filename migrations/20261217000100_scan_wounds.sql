-- Issue #24: a scan belongs to a wound. Scans made before wounds existed are moved into one
-- wound per (patient, body site): its site display is the scan's free-text `body_site` (which
-- every scan keeps), its aetiology `other`, its status `open` since its first scan, recorded by
-- whoever made that first scan. New scans name a wound or create one (`POST /v1/scans`).

ALTER TABLE scans ADD COLUMN wound_id uuid REFERENCES wounds(id);

WITH sites AS (
    SELECT DISTINCT ON (patient_id, body_site)
           patient_id, body_site, created_by, created_at
      FROM scans
     ORDER BY patient_id, body_site, created_at, id
), made AS (
    INSERT INTO wounds (id, patient_id, site_display, aetiology, status, status_date, status_history,
                        recorded_by, created_at, updated_at)
    SELECT gen_random_uuid(), patient_id, left(body_site, 200), 'other', 'open', created_at::date,
           jsonb_build_array(jsonb_build_object('status', 'open', 'date', created_at::date,
                                                'recorded_by', created_by, 'recorded_at', created_at)),
           created_by, created_at, created_at
      FROM sites
    RETURNING id, patient_id, site_display
)
UPDATE scans s SET wound_id = m.id
  FROM made m
 WHERE s.patient_id = m.patient_id AND left(s.body_site, 200) = m.site_display;

CREATE INDEX scans_wound ON scans (wound_id, created_at, id);
