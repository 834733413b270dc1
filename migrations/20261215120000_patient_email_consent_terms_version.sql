-- Issue #21, finding 7: two fields that came back wrong.
--
-- 1. Registration created the patient record without the email the patient signed up with
--    (`email: null` on their own record). Registration now copies it; this fills the records
--    created before, from the account's (normalised, lower-case) sign-in email. Only records
--    linked to an account and still without an email are touched; their version moves on so
--    an ETag read before no longer matches.
UPDATE patients p
   SET email = u.email, version = p.version + 1, updated_at = now()
  FROM users u
 WHERE p.user_id = u.id
   AND p.email IS NULL;

-- 2. A consent's version of the consent text was stored as `version`, which the API form of
--    an entry overwrote with the row version (`If-Match`). It is `terms_version` now (the
--    row version is unchanged: the decision itself did not change).
UPDATE patient_entries
   SET data = (data - 'version') || jsonb_build_object('terms_version', data->'version')
 WHERE kind = 'consent'
   AND data ? 'version';
