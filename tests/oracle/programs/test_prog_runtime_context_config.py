"""How-to "configure a graph at runtime": the run's context picks the model and prompt.

The LLM is a plain function of (model, system prompt, messages). Two runs of one
compiled graph with different contexts, a context given as a dict (coerced to the
dataclass), and a default context field; compared on both implementations.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import new_config
from tests.oracle.runtime_impls import observe, same_rt

pytestmark = pytest.mark.oracle

MODELS = {"anthropic": "claude", "openai": "gpt"}


@dataclass
class ContextSchema:
    model_name: str = "anthropic"
    system_prompt: str = "You are a helpful assistant."


class State(TypedDict):
    messages: Annotated[list[dict[str, str]], operator.add]


def fake_llm(model: str, system: str, messages: list[dict[str, str]]) -> dict[str, str]:
    last = messages[-1]["content"]
    return {"role": "ai", "content": f"[{model}] ({system[:12]}) re: {last}"}


def program(m: Any) -> Any:
    def call_model(state: State, runtime: m.Runtime[ContextSchema]) -> dict[str, Any]:
        model = MODELS[runtime.context.model_name]
        reply = fake_llm(model, runtime.context.system_prompt, state["messages"])
        runtime.stream_writer({"model": model})
        return {"messages": [reply]}

    def route(state: State) -> str:
        return "call_model" if len(state["messages"]) < 4 else m.END

    def user_turn(state: State) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": f"more #{len(state['messages'])}"}]}

    builder = m.StateGraph(State, context_schema=ContextSchema)
    builder.add_node("call_model", call_model)
    builder.add_node("user_turn", user_turn)
    builder.add_edge(m.START, "call_model")
    builder.add_edge("call_model", "user_turn")
    builder.add_conditional_edges("user_turn", route)
    graph = builder.compile(checkpointer=m.InMemorySaver())

    hi = {"messages": [{"role": "user", "content": "hi"}]}
    default = observe(graph, hi, new_config(), context=ContextSchema())
    openai = observe(graph, hi, new_config(),
                     context={"model_name": "openai", "system_prompt": "Talk like a pirate."})
    plain = graph.invoke(hi, new_config(), context=ContextSchema(model_name="openai"))
    return default, openai, plain


def test_context_configures_the_model() -> None:
    same_rt(program)
