-- Extensions later migrations rely on: exclusion constraints on time ranges (booking),
-- accent- and typo-tolerant name search (patients).
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS unaccent;
