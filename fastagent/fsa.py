"""Finite State Agents: declarative definitions, load-time validation, pure stepping.

An FSA reads like the business process it runs::

    FSA(
        name="card_replacement",
        intent="start_card_replacement",
        description="The caller wants to replace a lost, stolen or damaged card.",
        initial="identify",
        slots=(Slot("customer_id", pattern=r"\\d{4,8}"),),
        states=(
            State("identify", "Ask for the customer number.",
                  steps=(Step("provide_customer_id", "The caller gave their customer number.",
                              slots=("customer_id",), go=(Go("done"),)),)),
            State("done", "Thank the caller.", terminal=True),
        ),
    )

Everything here is pure: the engine core calls :func:`call_step` /
:func:`after_action` with the recorded arguments and tool results and turns the
returned :class:`Outcome` into decision events.  Guards are plain functions of a
:class:`Ctx`; they must be deterministic (no clock, no I/O), like the core.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fastagent.errors import ConfigError


class FsaDefinitionError(ConfigError):
    """An FSA definition that cannot run; the message names the FSA and the state."""


# ------------------------------------------------------------------ definitions


@dataclass(frozen=True)
class Slot:
    """A value the FSA collects from the caller, validated when the model passes it."""

    name: str
    description: str = ""
    type: str = "string"  # string | integer | boolean
    pattern: str | None = None  # full-match regex for strings
    choices: tuple[str, ...] = ()
    # Personal data (an identifier, a date of birth, card digits): stored only
    # encrypted, masked in every view (docs/privacy.md).
    sensitive: bool = False

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.description:
            out["description"] = self.description
        if self.choices:
            out["enum"] = list(self.choices)
        return out

    def validate(self, value: Any) -> str | None:
        """Return an error message, or None if ``value`` is acceptable."""
        if self.type == "boolean":
            return None if isinstance(value, bool) else f"{self.name} must be true or false"
        if self.type == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"{self.name} must be a whole number"
        if not isinstance(value, str) or not value.strip():
            return f"{self.name} must be a non-empty text"
        if self.pattern and not re.fullmatch(self.pattern, value.strip()):
            return f"{self.name} {value!r} is not valid ({self.description or self.pattern})"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}"
        return None


@dataclass(frozen=True)
class Ctx:
    """What a guard sees: slots so far, this step's arguments, the action's result."""

    slots: Mapping[str, Any]
    args: Mapping[str, Any]
    result: Mapping[str, Any] | None
    attempts: int  # how many times this step has been called in this FSA run

    def ok(self) -> bool:
        return bool(self.result) and self.result.get("ok", True) is not False


Guard = Callable[[Ctx], bool]


@dataclass(frozen=True)
class Go:
    """A guarded transition: the first ``Go`` whose guard passes is taken."""

    target: str
    when: Guard | None = None
    guard: str = ""  # the guard's name in the decision trail, e.g. "verified"


@dataclass(frozen=True)
class Action:
    """A backend tool called through MCP (``server.tool`` or a bare tool name)."""

    tool: str
    args: tuple[str, ...] = ()  # slot names passed as arguments
    side_effect: bool = False  # only allowed behind an explicit confirmation
    background: bool = False  # the conversation goes on while it runs


@dataclass(frozen=True)
class Step:
    """A function tool the model may call while the FSA is in the state."""

    name: str
    description: str
    slots: tuple[str, ...] = ()
    go: tuple[Go, ...] = ()
    action: Action | None = None
    confirm: bool = False  # the tool takes ``confirmed: bool``; false -> no action


@dataclass(frozen=True)
class State:
    name: str
    instructions: str
    steps: tuple[Step, ...] = ()
    terminal: bool = False
    outcome: str = "completed"  # for terminal states: completed | failed | transferred
    transfer: bool = False  # terminal: hand the caller to a human
    on_enter: Action | None = None  # runs when the state is entered
    after: tuple[Go, ...] = ()  # transitions taken when on_enter's result arrives
    reasoning_effort: str = ""  # the model's reasoning effort in this state ("" = agent's)
    # Collects payment-card data (PCI DSS): the engine pauses the call recording
    # (AudioCodes pauseCallRecording) on entering and resumes it on leaving.
    pci: bool = False


@dataclass(frozen=True)
class FSA:
    name: str
    intent: str  # the tool that starts it, e.g. start_card_replacement
    description: str
    initial: str
    states: tuple[State, ...]
    slots: tuple[Slot, ...] = ()
    state_by_name: dict[str, State] = field(init=False, repr=False, compare=False)
    slot_by_name: dict[str, Slot] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_by_name", {s.name: s for s in self.states})
        object.__setattr__(self, "slot_by_name", {s.name: s for s in self.slots})

    @property
    def cancel_tool(self) -> str:
        return f"cancel_{self.name}"

    def state(self, name: str) -> State:
        return self.state_by_name[name]

    def step_tools(self, state: str) -> list[dict[str, Any]]:
        """Function-tool specs for the model while the FSA is in ``state``."""
        st = self.state(state)
        tools = [self._tool_spec(step) for step in st.steps]
        if not st.terminal:
            tools.append(
                {
                    "type": "function",
                    "name": self.cancel_tool,
                    "description": f"The caller no longer wants to {self.description.lower()}",
                    "parameters": {"type": "object", "properties": {}},
                }
            )
        return tools

    def intent_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.intent,
            "description": self.description,
            "parameters": {"type": "object", "properties": {}},
        }

    def _tool_spec(self, step: Step) -> dict[str, Any]:
        props = {name: self.slot_by_name[name].schema() for name in step.slots}
        required = list(step.slots)
        if step.confirm:
            props["confirmed"] = {
                "type": "boolean",
                "description": "true only if the caller explicitly said yes",
            }
            required.append("confirmed")
        return {
            "type": "function",
            "name": step.name,
            "description": step.description,
            "parameters": {"type": "object", "properties": props, "required": required},
        }


# ------------------------------------------------------------------- validation


def validate(fsa: FSA) -> FSA:
    """Check a definition when it is loaded; raise :class:`FsaDefinitionError`."""

    def fail(state: str | None, why: str) -> FsaDefinitionError:
        where = f"FSA {fsa.name!r}" + (f", state {state!r}" if state else "")
        return FsaDefinitionError(f"{where}: {why}")

    if len(fsa.state_by_name) != len(fsa.states):
        raise fail(None, "duplicate state names")
    if fsa.initial not in fsa.state_by_name:
        raise fail(fsa.initial, "initial state is not defined")
    tools: dict[str, str] = {fsa.intent: "(intent)", fsa.cancel_tool: "(cancel)"}
    incoming_confirmed: dict[str, bool] = {}
    for st in fsa.states:
        targets = [g.target for step in st.steps for g in step.go] + [g.target for g in st.after]
        if st.terminal and targets:
            raise fail(st.name, "terminal state has outgoing transitions")
        if not st.terminal and not targets:
            raise fail(st.name, "dead end: not terminal and no transitions")
        for target in targets:
            if target not in fsa.state_by_name:
                raise fail(st.name, f"transition to unknown state {target!r}")
        if st.after and st.on_enter is None:
            raise fail(st.name, "'after' transitions need an on_enter action")
        for step in st.steps:
            if step.name in tools:
                raise fail(st.name, f"duplicate tool name {step.name!r}")
            tools[step.name] = st.name
            for slot in step.slots:
                if slot not in fsa.slot_by_name:
                    raise fail(st.name, f"step {step.name!r} uses unknown slot {slot!r}")
            if step.action and step.action.side_effect and not step.confirm:
                raise fail(st.name, f"step {step.name!r} has a side effect without confirmation")
            for g in step.go:
                prev = incoming_confirmed.get(g.target, True)
                incoming_confirmed[g.target] = prev and step.confirm
        for g in st.after:
            incoming_confirmed[g.target] = incoming_confirmed.get(g.target, True) and False
    for st in fsa.states:
        if st.on_enter and st.on_enter.side_effect and not incoming_confirmed.get(st.name, False):
            raise fail(st.name, "side effect on enter, but not every way in is a confirmation")
    reachable = {fsa.initial}
    frontier = [fsa.initial]
    while frontier:
        st = fsa.state(frontier.pop())
        for target in [g.target for step in st.steps for g in step.go] + [
            g.target for g in st.after
        ]:
            if target not in reachable:
                reachable.add(target)
                frontier.append(target)
    unreachable = [s.name for s in fsa.states if s.name not in reachable]
    if unreachable:
        raise fail(unreachable[0], "unreachable from the initial state")
    return fsa


def diagram(fsa: FSA) -> str:
    """A Mermaid state diagram of ``fsa``."""
    lines = ["stateDiagram-v2", f"    [*] --> {fsa.initial}: {fsa.intent}"]
    for st in fsa.states:
        for step in st.steps:
            for g in step.go:
                label = step.name + (f" [{g.guard}]" if g.guard else "")
                lines.append(f"    {st.name} --> {g.target}: {label}")
        for g in st.after:
            label = (st.on_enter.tool if st.on_enter else "after") + (
                f" [{g.guard}]" if g.guard else ""
            )
            lines.append(f"    {st.name} --> {g.target}: {label}")
        if st.terminal:
            lines.append(f"    {st.name} --> [*]")
    return "\n".join(lines)


# --------------------------------------------------------------------- running


class Run(msgspec.Struct, kw_only=True):
    """One running FSA in a call: its state, slots and per-step attempt counts."""

    fsa: str
    state: str
    slots: dict[str, Any] = msgspec.field(default_factory=dict)
    attempts: dict[str, int] = msgspec.field(default_factory=dict)
    waiting: str = ""  # the step or "enter:<state>" whose action result is awaited
    waiting_id: str = ""  # the tool call id of that action (set by the engine)
    waiting_args: dict[str, Any] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What stepping an FSA decided; the core turns it into decision events."""

    source: str
    target: str  # == source when no transition was taken
    trigger: str
    guard: str = ""
    reason: str = ""
    dispatch: Action | None = None  # call this backend tool next
    dispatch_args: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)  # told to the model
    finished: str = ""  # outcome if a terminal state was reached


def start(fsa: FSA) -> tuple[Run, Outcome]:
    run = Run(fsa=fsa.name, state=fsa.initial)
    out = _enter(fsa, run, source="", trigger=fsa.intent, guard="", result=None)
    return run, out


def call_step(fsa: FSA, run: Run, tool: str, args: Mapping[str, Any]) -> Outcome:
    """The model called ``tool`` while ``run`` is in its current state."""
    st = fsa.state(run.state)
    if tool == fsa.cancel_tool:
        run.state = run.state
        return Outcome(
            source=st.name,
            target=st.name,
            trigger=tool,
            reason="caller cancelled",
            output={"ok": True, "cancelled": True, "next": "Confirm the cancellation briefly."},
            finished="abandoned",
        )
    step = next((s for s in st.steps if s.name == tool), None)
    if step is None:
        return _stay(st, tool, f"{tool} is not available in state {st.name}")
    if run.waiting:
        return _stay(st, tool, "a previous step is still running; wait for its result")
    errors = [
        err
        for name in step.slots
        if (err := fsa.slot_by_name[name].validate(args.get(name))) is not None
    ]
    if errors:
        return _stay(st, tool, "; ".join(errors) + ". Ask the caller again.", guard="invalid")
    run.attempts[tool] = run.attempts.get(tool, 0) + 1
    values = {name: _clean(args[name]) for name in step.slots}
    run.slots.update(values)
    if step.confirm and args.get("confirmed") is not True:
        return _stay(
            st, tool, "The caller did not confirm. Ask what they want to change.", "not confirmed"
        )
    if step.action is not None:
        run.waiting = tool
        run.waiting_args = values
        call_args = {name: run.slots.get(name) for name in step.action.args}
        output = {"ok": True, "state": st.name, "next": "Working on it; tell the caller briefly."}
        return Outcome(
            source=st.name,
            target=st.name,
            trigger=tool,
            reason=f"calling {step.action.tool}",
            dispatch=step.action,
            dispatch_args=call_args,
            output=output if step.action.background else {},
        )
    return _transition(fsa, run, step.go, tool, values, None)


def after_action(fsa: FSA, run: Run, result: Mapping[str, Any]) -> Outcome:
    """The backend action this run was waiting for finished with ``result``."""
    waiting, run.waiting, run.waiting_id = run.waiting, "", ""
    args, run.waiting_args = run.waiting_args, {}
    st = fsa.state(run.state)
    if waiting.startswith("enter:"):
        return _transition(fsa, run, st.after, st.on_enter.tool if st.on_enter else "", {}, result)
    step = next(s for s in st.steps if s.name == waiting)
    return _transition(fsa, run, step.go, waiting, args, result)


def _transition(
    fsa: FSA,
    run: Run,
    gos: tuple[Go, ...],
    trigger: str,
    args: Mapping[str, Any],
    result: Mapping[str, Any] | None,
) -> Outcome:
    st = fsa.state(run.state)
    ctx = Ctx(slots=run.slots, args=args, result=result, attempts=run.attempts.get(trigger, 0))
    for go in gos:
        if go.when is None or go.when(ctx):
            return _enter(fsa, run, st.name, trigger, go.guard, result, go.target)
    return _stay(st, trigger, "no transition applies; ask the caller again", "no guard passed")


def _enter(
    fsa: FSA,
    run: Run,
    source: str,
    trigger: str,
    guard: str,
    result: Mapping[str, Any] | None,
    target: str | None = None,
) -> Outcome:
    target = target or fsa.initial
    run.state = target
    st = fsa.state(target)
    output: dict[str, Any] = {"ok": True, "state": target, "next": st.instructions}
    if result is not None:
        output["result"] = dict(result)
    dispatch = None
    dispatch_args: dict[str, Any] = {}
    if st.on_enter is not None:
        run.waiting = f"enter:{target}"
        dispatch = st.on_enter
        dispatch_args = {name: run.slots.get(name) for name in st.on_enter.args}
    return Outcome(
        source=source,
        target=target,
        trigger=trigger,
        guard=guard,
        reason=f"{trigger} -> {target}" + (f" ({guard})" if guard else ""),
        dispatch=dispatch,
        dispatch_args=dispatch_args,
        output=output,
        finished=st.outcome if st.terminal else "",
    )


def _stay(st: State, trigger: str, why: str, guard: str = "") -> Outcome:
    return Outcome(
        source=st.name,
        target=st.name,
        trigger=trigger,
        guard=guard,
        reason=why,
        output={"ok": False, "state": st.name, "error": why},
    )


def _clean(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
