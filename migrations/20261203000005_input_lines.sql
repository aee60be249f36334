-- Input lines that made a job's items (jobs from files and NDJSON bodies): when every line is
-- one item (input_lines = total), a batch's request counts are the job's counts and need no
-- per-line aggregation over its items.
ALTER TABLE jobs ADD COLUMN input_lines integer;
