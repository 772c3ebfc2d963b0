"""The simulator's imports form a DAG, lazy imports inside functions included (grimp, which
import-linter uses, sees those too): sim/robot.py (`chatvla2 run --robot sim`), the driver backend
that starts simulated arms through it, and the live camera it shows a task scene with once went in
a circle, through the gripper indices the camera took from the driver backend. The layout is
contract/embodiment.py's now."""

from __future__ import annotations

import itertools

import grimp
import pytest

ROBOT = "chatvla2.sim.robot"
DRIVER_BACKEND = "chatvla2.sim.tasks.driver_backend"
LIVE_CAMERA = "chatvla2.sim.tasks.live_camera"


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("chatvla2", exclude_type_checking_imports=True, cache_dir=None)


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module, among the imports between `modules`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_the_sim_package_has_no_import_cycle(graph):
    sim = {m for m in graph.modules if m == "chatvla2.sim" or m.startswith("chatvla2.sim.")}
    assert ROBOT in sim and LIVE_CAMERA in sim
    assert _cycles(graph, sim) == []


@pytest.mark.parametrize("a, b", list(itertools.combinations((ROBOT, DRIVER_BACKEND, LIVE_CAMERA), 2)))
def test_robot_driver_backend_and_live_camera_do_not_import_each_other_both_ways(graph, a, b):
    there = graph.find_shortest_chain(importer=a, imported=b)
    back = graph.find_shortest_chain(importer=b, imported=a)
    assert there is None or back is None, f"{' -> '.join(there)} and {' -> '.join(back)}"


def test_the_cycle_finder_finds_the_old_circle():
    """The checks above can fail: the camera importing the driver backend again closes the circle."""
    graph = grimp.build_graph("chatvla2", exclude_type_checking_imports=True, cache_dir=None)  # its own: the module fixture stays as built
    graph.add_import(importer=LIVE_CAMERA, imported=DRIVER_BACKEND)
    sim = {m for m in graph.modules if m.startswith("chatvla2.sim.")}
    assert any({ROBOT, DRIVER_BACKEND, LIVE_CAMERA} <= set(cycle) for cycle in _cycles(graph, sim))
