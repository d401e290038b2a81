"""Oracle tests: the same scenario on real LangGraph and on durable_graph, compared."""
