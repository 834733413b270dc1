-- A measured scan keeps the keyframe a clinician adjusts its outline on (issue #25: the
-- outline can be drawn on any reconstructed scan, not only where the automatic measurement
-- failed). The check that allowed a suggested keyframe on `needs_outline` rows only goes; the
-- others stay.
DO $$
DECLARE c text;
BEGIN
  FOR c IN
    SELECT conname FROM pg_constraint
     WHERE conrelid = 'scan_reconstructions'::regclass AND contype = 'c'
       AND pg_get_constraintdef(oid) LIKE '%suggested_keyframe IS NULL%'
  LOOP
    EXECUTE format('ALTER TABLE scan_reconstructions DROP CONSTRAINT %I', c);
  END LOOP;
END $$;
