"""How `basetrigger base impact` shows an impact (GET /api/bases/{ref}/impact): a tree for the
terminal, Graphviz DOT and Mermaid for documents. All three read the API's JSON, nothing else.

In each, an edge from an image to a task means "the task is built FROM it"; a build-stage base is a
dashed edge; a task that would not rebuild (trigger off, or a build-stage base under a Runtime
trigger) is marked and has nothing below it, since its outputs would not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _tasks(impact: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["task"]: t for level in impact.get("levels", []) for t in level["tasks"]}


def _producers(tasks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Output image -> the rebuilding task that pushes it (the first, as the API reads them)."""
    produced: dict[str, str] = {}
    for task in tasks.values():
        if task["rebuilds"]:
            for image in task["outputs"]:
                produced.setdefault(image, task["task"])
    return produced


def _marks(task: dict[str, Any], edge: dict[str, Any]) -> str:
    marks = [f"level {task['level']}", "runtime" if edge["runtime"] else "build stage"]
    if not task["trigger"]["enabled"]:
        marks.append("trigger off")
    if not task["rebuilds"]:
        marks.append(f"not rebuilt: {task['reason']}")
    if task.get("cycle"):
        marks.append("on a cycle")
    return ", ".join(marks)


def impact_tree(impact: dict[str, Any]) -> str:
    """The impact as a tree under the changed image; a task reached twice is shown once in full."""
    tasks = _tasks(impact)
    children: dict[str, list[dict[str, Any]]] = {}
    for edge in impact.get("edges", []):
        children.setdefault(edge["base"], []).append(edge)
    shown: set[str] = set()
    lines = [impact["image"]]

    def walk(image: str, prefix: str) -> Iterator[str]:
        edges = sorted(children.get(image, []), key=lambda e: (tasks[e["task"]]["level"], e["task"]))
        for i, edge in enumerate(edges):
            last = i == len(edges) - 1
            task = tasks[edge["task"]]
            branch, inner = ("└── ", "    ") if last else ("├── ", "│   ")
            if task["task"] in shown:
                yield f"{prefix}{branch}{task['task']} (level {task['level']}, shown above)"
                continue
            shown.add(task["task"])
            outputs = f" → {', '.join(task['outputs'])}" if task["rebuilds"] and task["outputs"] else ""
            yield f"{prefix}{branch}{task['task']} ({_marks(task, edge)}){outputs}"
            if task["rebuilds"]:
                for output in task["outputs"]:
                    yield from walk(output, prefix + inner)

    lines.extend(walk(impact["image"], ""))
    rebuilding = sum(1 for t in tasks.values() if t["rebuilds"])
    levels = len({t["level"] for t in tasks.values() if t["rebuilds"]})
    if not tasks:
        lines.append(f"nothing is built FROM {impact['image']}: no task would rebuild")
    else:
        lines.append(f"{rebuilding} task(s) would rebuild in {levels} level(s); "
                     f"{len(tasks) - rebuilding} dependent(s) would not")
    return "\n".join(lines)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def impact_dot(impact: dict[str, Any]) -> str:
    """Graphviz DOT (`basetrigger base impact IMAGE -o dot | dot -Tsvg > impact.svg`)."""
    tasks = _tasks(impact)
    produced = _producers(tasks)
    lines = ["digraph impact {", "  rankdir=LR;",
             '  node [shape=box, style="rounded", fontname="sans-serif"];',
             '  edge [fontname="sans-serif", fontsize=10];',
             f"  {_dot_id('image:' + impact['image'])} [label={_dot_id(impact['image'])}, shape=ellipse];"]
    for name, task in sorted(tasks.items(), key=lambda item: (item[1]["level"], item[0])):
        label = f"{name}\\nlevel {task['level']}"
        style = "rounded"
        if not task["rebuilds"]:
            label += "\\n" + ("trigger off" if not task["trigger"]["enabled"] else "not rebuilt")
            style = "rounded,dashed"
        lines.append(f"  {_dot_id('task:' + name)} [label=\"{_escape_label(label)}\", style=\"{style}\"];")
    for edge in impact.get("edges", []):
        source = (f"image:{edge['base']}" if edge["base"] == impact["image"] or edge["base"] not in produced
                  else f"task:{produced[edge['base']]}")
        attrs = []
        if source.startswith("task:"):
            attrs.append(f"label={_dot_id(edge['base'])}")
        if not edge["runtime"]:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {_dot_id(source)} -> {_dot_id('task:' + edge['task'])}{suffix};")
    lines.append("}")
    return "\n".join(lines)


def _escape_label(label: str) -> str:
    # `\n` in the label is DOT's line break: keep it, escape only quotes.
    return label.replace('"', '\\"')


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def impact_mermaid(impact: dict[str, Any]) -> str:
    """A Mermaid flowchart (paste into Markdown between ```mermaid fences)."""
    tasks = _tasks(impact)
    produced = _producers(tasks)
    ids = {name: f"t{i}" for i, name in enumerate(sorted(tasks, key=lambda n: (tasks[n]["level"], n)))}
    lines = ["flowchart LR", f'  root(["{_mermaid_text(impact["image"])}"])']
    off = []
    for name, node_id in ids.items():
        task = tasks[name]
        label = f"{name}<br/>level {task['level']}"
        if not task["rebuilds"]:
            label += "<br/>" + ("trigger off" if not task["trigger"]["enabled"] else "not rebuilt")
            off.append(node_id)
        lines.append(f'  {node_id}["{_mermaid_text(label)}"]')
    for edge in impact.get("edges", []):
        if edge["base"] == impact["image"] or edge["base"] not in produced:
            source, label = "root", ""
        else:
            source, label = ids[produced[edge["base"]]], edge["base"]
        arrow = "-->" if edge["runtime"] else "-.->"
        if not edge["runtime"]:
            label = f"{label} (build stage)".strip()
        text = f'|"{_mermaid_text(label)}"|' if label else ""
        lines.append(f"  {source} {arrow}{text} {ids[edge['task']]}")
    if off:
        lines.append("  classDef off stroke-dasharray: 5 5")
        lines.append(f"  class {','.join(off)} off")
    return "\n".join(lines)
