"""Real-world programs in the style of LangGraph's how-to guides, run on both libraries.

Each module defines ``program(m)``: the guide's code with its imports taken from ``m``
(LangGraph or durable_graph) and LLM calls replaced by plain functions; it returns what
the guide prints or asserts (outputs, streamed chunks, state, history).
``tests/oracle/test_programs.py`` runs every module listed in ``PROGRAMS`` on both and
compares. No ``from __future__ import annotations`` in these modules: schemas are built
inside ``program`` from names of ``m`` and both libraries read them with get_type_hints.
"""

PROGRAMS = [
    "chatbot_memory",
    "delete_messages",
    "summarize_history",
    "private_state",
    "io_schemas",
    "command_routing",
    "tool_agent",
    "review_tool_calls",
    "edit_state",
    "time_travel_messages",
    "map_reduce_send",
    "branching_drawn",
    "subgraph_tool_agent",
    "subgraph_map_reduce",
    "subgraph_nested_memory",
    "subgraph_time_travel",
    "subgraph_breakpoint_edit",
]
