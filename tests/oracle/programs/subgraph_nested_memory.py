"""Multi-level nesting with interrupts and a subgraph that remembers across calls:
parent -> "assistant" (a compiled graph as a node) -> a node calling a
``checkpointer=True`` notes subgraph, which asks a human before saving a note."""

import operator
from typing import Annotated, Any

from typing_extensions import TypedDict


class Chat(TypedDict):
    log: Annotated[list[str], operator.add]


class Notes(TypedDict):
    notes: Annotated[list[str], operator.add]
    draft: str


def program(m: Any) -> Any:
    def draft(state: Notes) -> dict[str, Any]:
        return {"draft": f"note #{len(state.get('notes', [])) + 1}"}

    def confirm(state: Notes) -> dict[str, Any]:
        answer = m.interrupt({"save": state["draft"]})
        return {"notes": [f"{state['draft']}={answer}"]}

    nb = m.StateGraph(Notes)
    nb.add_node("draft", draft)
    nb.add_node("confirm", confirm)
    nb.add_edge(m.START, "draft")
    nb.add_edge("draft", "confirm")
    notes = nb.compile(checkpointer=True)

    def take_note(state: Chat) -> dict[str, Any]:
        out = notes.invoke({"notes": [], "draft": ""})
        return {"log": [f"notes={out['notes']}"]}

    ab = m.StateGraph(Chat)
    ab.add_node("take_note", take_note)
    ab.add_node("reply", lambda s: {"log": ["assistant replied"]})
    ab.add_edge(m.START, "take_note")
    ab.add_edge("take_note", "reply")
    assistant = ab.compile()

    pb = m.StateGraph(Chat)
    pb.add_node("greet", lambda s: {"log": ["hello"]})
    pb.add_node("assistant", assistant)
    pb.add_edge(m.START, "greet")
    pb.add_edge("greet", "assistant")
    graph = pb.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "nested-memory"}}

    seen = []
    for run in range(2):
        out = graph.invoke({"log": [f"run {run}"]}, config)
        seen.append([i.value for i in out["__interrupt__"]])
        snap = graph.get_state(config, subgraphs=True)
        mid = snap.tasks[0].state
        seen.append((snap.next, mid.next, [t.name for t in mid.tasks],
                     [i.value for i in snap.interrupts]))
        seen.append(list(graph.stream(m.Command(resume=f"yes{run}"), config,
                                      stream_mode="values", subgraphs=True))[-1][1])
    seen.append([(h.next, h.values["log"][-1:]) for h in graph.get_state_history(config)])
    return seen
