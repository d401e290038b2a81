"""The user API: graphs, the functional API, chat state (``langgraph.graph``'s names too)."""

from __future__ import annotations

from durable_graph.graph.message import MessagesState, add_messages
from durable_graph.graph.state import CompiledStateGraph, StateGraph
from durable_graph.types import END, START

__all__ = ["END", "START", "CompiledStateGraph", "MessagesState", "StateGraph", "add_messages"]
