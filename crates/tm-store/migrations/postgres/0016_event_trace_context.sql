-- The W3C trace context of the span that wrote each event (none when tracing is off), so
-- that a webhook delivery or Kafka record made from it continues the write's trace.
ALTER TABLE events
    ADD COLUMN traceparent text CHECK (traceparent IS NULL OR length(traceparent) = 55),
    ADD COLUMN tracestate  text;
