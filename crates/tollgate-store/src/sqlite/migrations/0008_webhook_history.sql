-- Pruning finished webhook history looks events' deliveries up by event.
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
