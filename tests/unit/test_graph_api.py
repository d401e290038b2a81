"""Graph API promises with no LangGraph counterpart to compare against: chat state without
langchain_core, how messages are stored, refused arguments, ``command=``, drawings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any, TypedDict

import pytest

from durable_graph import (
    END,
    REMOVE_ALL_MESSAGES,
    START,
    Command,
    InMemorySaver,
    MessagesState,
    RemoveMessage,
    StateGraph,
    TypedSerializer,
    add_messages,
    interrupt,
)
from durable_graph.graph import message as message_module


class S(TypedDict):
    a: str


def asking_graph() -> Any:
    def ask(s: S) -> dict[str, Any]:
        return {"a": interrupt("ok?")}

    b = StateGraph(S)
    b.add_node("ask", ask)
    b.add_edge(START, "ask")
    return b.compile(checkpointer=InMemorySaver())


# -- chat state ---------------------------------------------------------------------


def test_chat_state_without_langchain_core_uses_dicts_and_objects_with_ids() -> None:
    """In a fresh interpreter where importing langchain_core fails."""
    program = textwrap.dedent("""
        import sys
        sys.modules["langchain_core"] = None  # import langchain_core -> ImportError
        from durable_graph import (START, MessagesState, RemoveMessage, StateGraph,
                                   REMOVE_ALL_MESSAGES, add_messages)

        class Msg:
            def __init__(self, text, id=None):
                self.text, self.id = text, id

        b = StateGraph(MessagesState)
        b.add_node("bot", lambda s: {"messages": [("assistant", "hello"), Msg("obj")]})
        b.add_edge(START, "bot")
        out = b.compile().invoke({"messages": [{"role": "user", "content": "hi"}, "plain"]})
        msgs = out["messages"]
        assert [m["content"] if isinstance(m, dict) else m.text for m in msgs] == \\
            ["hi", "plain", "hello", "obj"], msgs
        assert all((m["id"] if isinstance(m, dict) else m.id) for m in msgs)
        assert msgs[2]["role"] == "assistant"
        first = msgs[0]["id"]
        edited = add_messages(msgs, [{"role": "user", "content": "HI", "id": first},
                                     RemoveMessage(id=msgs[1]["id"])])
        assert [m["content"] if isinstance(m, dict) else m.text for m in edited] == \\
            ["HI", "hello", "obj"]
        assert add_messages(edited, [RemoveMessage(id=REMOVE_ALL_MESSAGES)]) == []
        try:
            add_messages(edited, [RemoveMessage(id="nope")])
        except ValueError as exc:
            assert "nope" in str(exc)
        else:
            raise AssertionError("removing an unknown id must raise")
        assert "langchain_core.messages" not in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_add_messages_refuses_unknown_options_and_one_sided_calls() -> None:
    with pytest.raises(TypeError, match="fromat"):
        add_messages([], [], fromat="x")
    with pytest.raises(ValueError, match="both 'left' and 'right'"):
        add_messages([("user", "a")])
    with pytest.raises(ValueError, match="Unrecognized format"):
        add_messages(format="html")([], [("user", "a")])


def test_messages_are_stored_with_the_typed_serializer_not_pickle() -> None:
    b = StateGraph(MessagesState)
    b.add_node("bot", lambda s: {"messages": [("ai", "hi"), {"role": "tool", "content": "r",
                                                            "tool_call_id": "c1"}]})
    b.add_edge(START, "bot")
    saver = InMemorySaver()
    cfg = {"configurable": {"thread_id": "serde"}}
    messages = b.compile(checkpointer=saver).invoke({"messages": [("user", "q")]}, cfg)[
        "messages"]
    assert message_module._langchain() is not None  # the test venv has langchain_core
    tag, data = TypedSerializer().dumps_typed(messages)
    assert tag == "msgpack"
    assert b"langchain_core.messages" in data  # typed records, read back by class name
    assert TypedSerializer(pickle_fallback=False).loads_typed((tag, data)) == messages
    saved = saver.get_tuple(cfg)
    assert saved is not None and saved.checkpoint.channel_values["messages"] == messages


def test_remove_message_is_stored_without_pickle() -> None:
    serde = TypedSerializer(pickle_fallback=False)
    writes = [("messages", [RemoveMessage(id="m1"), RemoveMessage(id=REMOVE_ALL_MESSAGES)])]
    assert serde.loads_typed(serde.dumps_typed(writes)) == writes


# -- arguments are never ignored ------------------------------------------------------


def test_misspelt_run_arguments_raise_type_error_naming_them() -> None:
    graph = asking_graph()
    cfg = {"configurable": {"thread_id": "typo"}}
    with pytest.raises(TypeError, match="durabilty"):
        graph.invoke({"a": ""}, cfg, durabilty="exit")
    with pytest.raises(TypeError, match="stream_modes"):
        graph.stream({"a": ""}, cfg, stream_modes="values")
    with pytest.raises(TypeError, match="checkpointr"):
        StateGraph(S).compile(checkpointr=InMemorySaver())
    with pytest.raises(TypeError, match="retry_polcy"):
        StateGraph(S).add_node("n", lambda s: {}, retry_polcy=None)


def test_subgraphs_true_leads_root_chunks_with_an_empty_namespace() -> None:
    graph = asking_graph()
    chunks = list(graph.stream({"a": ""}, {"configurable": {"thread_id": "sg"}},
                               subgraphs=True))
    assert chunks and all(ns == () for ns, _ in chunks)


def test_xray_is_refused_not_ignored() -> None:
    graph = asking_graph()
    with pytest.raises(NotImplementedError):
        graph.get_graph(xray=True)


def test_command_keyword_resumes_like_a_command_input() -> None:
    graph = asking_graph()
    cfg = {"configurable": {"thread_id": "cmd"}}
    list(graph.stream({"a": ""}, cfg))
    chunks = list(graph.stream(None, cfg, command=Command(resume="yes")))
    assert chunks == [{"ask": {"a": "yes"}}]
    assert graph.get_state(cfg).values == {"a": "yes"}


def test_command_keyword_with_input_or_a_non_command_is_a_type_error() -> None:
    graph = asking_graph()
    cfg = {"configurable": {"thread_id": "both"}}
    with pytest.raises(TypeError, match="not both"):
        graph.invoke({"a": ""}, cfg, command=Command(resume=1))
    with pytest.raises(TypeError, match="takes a Command"):
        graph.invoke(None, cfg, command={"resume": 1})


# -- drawing --------------------------------------------------------------------------


def test_draw_ascii_boxes_every_node_and_lists_every_edge() -> None:
    b = StateGraph(S)
    b.add_node("plan", lambda s: {})
    b.add_node("act", lambda s: {})
    b.add_edge(START, "plan")
    b.add_conditional_edges("plan", lambda s: "go", {"go": "act", "stop": END})
    text = b.compile(interrupt_before=["act"]).get_graph().draw_ascii()
    for node in ("__start__", "plan", "act", "__end__"):
        assert f"| {node} |" in text
    assert "__start__ ---> plan" in text
    assert "plan -.-> act (go)" in text
    assert "plan -.-> __end__ (stop)" in text
    assert "act ---> __end__" in text
    layer = {n: next(i for i, line in enumerate(text.splitlines()) if f"| {n} |" in line)
             for n in ("__start__", "plan", "act", "__end__")}
    assert layer["__start__"] < layer["plan"] < layer["act"] == layer["__end__"]


def test_a_node_that_is_neither_function_nor_runnable_is_refused() -> None:
    with pytest.raises(ValueError, match="'n' must be a function, a Runnable"):
        StateGraph(S).add_node("n", 42)
