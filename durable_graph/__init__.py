"""durable-graph."""
