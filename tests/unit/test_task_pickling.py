"""How a ``@task`` call's function travels in a distributed call's job (pickled)."""

from __future__ import annotations

import functools
import sys
import types

import cloudpickle
import pytest

from durable_graph import task
from durable_graph.errors import GraphTypeError
from durable_graph.graph.func import _TaskBody, by_value


@task
def double(x: int) -> int:
    return 2 * x


def test_a_module_level_task_travels_as_its_name() -> None:
    data = cloudpickle.dumps(_TaskBody(double))
    assert b"double" in data and double.fn.__code__.co_code not in data  # a name, no code
    body = cloudpickle.loads(data)
    assert isinstance(body, _TaskBody) and body.task is double
    assert body(21) == 42


def test_a_task_its_module_does_not_name_travels_by_value() -> None:
    @task
    def triple(x: int) -> int:
        return 3 * x

    data = cloudpickle.dumps(_TaskBody(triple))
    assert triple.fn.__code__.co_code in data
    del triple
    assert cloudpickle.loads(data)(5) == 15


def test_a_task_of_a_module_pickled_by_value_travels_by_value() -> None:
    module = types.ModuleType("dg_test_shipped_tasks")
    exec("from durable_graph import task\n@task\ndef inc(x):\n    return x + 1\n",  # noqa: S102
         module.__dict__)
    sys.modules[module.__name__] = module
    cloudpickle.register_pickle_by_value(module)
    try:
        data = cloudpickle.dumps(_TaskBody(module.inc))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules[module.__name__]
    assert cloudpickle.loads(data)(1) == 2  # the module is gone: the code came along


def test_a_name_that_is_no_task_on_the_worker_is_refused_clearly() -> None:
    data = cloudpickle.dumps(_TaskBody(double))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules[__name__], "double", lambda x: x)
        with pytest.raises(GraphTypeError, match="is not a @task on this worker"):
            cloudpickle.loads(data)


def test_a_task_of_a_package_pickled_by_value_travels_by_value() -> None:
    """cloudpickle pickles a registered package's submodules by value too, so must a call."""
    package, module = types.ModuleType("dg_test_pkg"), types.ModuleType("dg_test_pkg.tasks")
    package.__path__ = []
    exec("from durable_graph import task\n@task\ndef inc(x):\n    return x + 1\n",  # noqa: S102
         module.__dict__)
    package.tasks = module  # type: ignore[attr-defined]
    sys.modules.update({package.__name__: package, module.__name__: module})
    cloudpickle.register_pickle_by_value(package)
    try:
        data = cloudpickle.dumps(_TaskBody(module.inc))
    finally:
        cloudpickle.unregister_pickle_by_value(package)
        del sys.modules[module.__name__], sys.modules[package.__name__]
    assert cloudpickle.loads(data)(1) == 2  # the package is gone: the code came along


def test_a_call_of_a_run_shipped_as_a_blob_travels_by_value() -> None:
    """A worker that loaded the graph from its blob may not import the task's module."""
    call = by_value(functools.partial(_TaskBody(double), 21))
    data = cloudpickle.dumps(call)
    assert double.fn.__code__.co_code in data
    assert cloudpickle.loads(data)() == 42


def test_a_task_module_the_worker_cannot_import_is_refused_clearly() -> None:
    data = cloudpickle.dumps(_TaskBody(double)).replace(
        __name__.encode(), b"dg_no_such_module_" + b"x" * (len(__name__) - 18))
    with pytest.raises(GraphTypeError, match="cannot be imported on this worker"):
        cloudpickle.loads(data)
