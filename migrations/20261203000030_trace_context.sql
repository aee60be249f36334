-- W3C trace context (issue 16): the `traceparent` of the api's intake span, stored with the job
-- so the dispatcher and the relay put it in every chunk message's AMQP headers. The default
-- reads the transaction's `gatehouse.traceparent` (set by common::db::begin from the request's
-- context), so every submission path records it. Added without a default first: no rewrite.
ALTER TABLE jobs ADD COLUMN traceparent text;
ALTER TABLE jobs ALTER COLUMN traceparent
    SET DEFAULT nullif(current_setting('gatehouse.traceparent', true), '');
