-- W3C trace context: a run started with a `traceparent` header joins the caller's trace. The
-- header as received (normalised) and its `tracestate` are kept with the run; NULL means the
-- run has a trace of its own, whose id is derived from the run id (core's `trace` module), so
-- runs that joined no trace store nothing.
ALTER TABLE runs ADD COLUMN traceparent TEXT;
ALTER TABLE runs ADD COLUMN tracestate TEXT;

-- A pipeline execution keeps its caller's trace from submission to start.
ALTER TABLE execution_queue ADD COLUMN traceparent TEXT;
ALTER TABLE execution_queue ADD COLUMN tracestate TEXT;
