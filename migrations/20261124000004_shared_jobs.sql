-- Shared results: a job's owner (or a tenant admin) can share it with the whole tenant,
-- which lets guests read it.
ALTER TABLE jobs ADD COLUMN shared boolean NOT NULL DEFAULT false;
