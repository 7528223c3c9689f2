"""The engine's status: an enum, one transition table, and a read-only view
(issue 10, point 4); admission outside the core (point 5)."""

from __future__ import annotations

import msgspec
import pytest

from fastagent import events as ev
from fastagent.admission import AdmittingEngine, admit, engine_for
from fastagent.agents import get_agent
from fastagent.core import Admission, Engine, EngineView
from fastagent.status import TRANSITIONS, IllegalTransition, Status, Trigger, next_status


def _initiated(call_id: str = "c", **config: object) -> ev.SessionInitiated:
    return ev.SessionInitiated(
        call_id=call_id,
        seq=1,
        at=0,
        config=ev.CallConfig(**config),  # type: ignore[arg-type]
        offered_formats=("raw/mulaw",),
    )


def _feed(engine: Engine, cls: type[ev.Input], **fields: object) -> list[str]:
    inp = cls(call_id=engine.call_id, seq=engine.view.next_seq, at=0, **fields)  # type: ignore[arg-type]
    return [type(d).__name__ for d in engine.handle(inp)]


def test_every_status_is_reachable_and_ended_is_final() -> None:
    reached = {Status.NEW} | set(TRANSITIONS.values())
    assert reached == set(Status)
    assert not [k for k in TRANSITIONS if k[0] is Status.ENDED]


def test_an_illegal_transition_raises_one_line() -> None:
    assert next_status(Status.NEW, Trigger.ACCEPT) is Status.ACTIVE
    with pytest.raises(IllegalTransition, match="resume is not allowed while the call is new"):
        next_status(Status.NEW, Trigger.RESUME)


def test_an_illegal_transition_is_an_engine_fault_not_an_exception() -> None:
    """A second session.initiate of a running call: the status table refuses
    (active --accept--> is not a transition), recorded as an EngineFault."""
    engine = engine_for(_initiated())
    assert _feed(engine, ev.SessionInitiated, config=ev.CallConfig()) == [
        "SessionAccepted",
        "ModelConfigured",
    ]
    out = engine.handle(msgspec.structs.replace(_initiated(), seq=engine.view.next_seq))
    assert [type(d).__name__ for d in out] == ["EngineFault"]
    assert "accept is not allowed while the call is active" in out[0].error  # type: ignore[attr-defined]
    assert engine.view.status is Status.ACTIVE


def test_caller_lost_before_the_session_is_a_fault() -> None:
    engine = Engine("c")
    assert _feed(engine, ev.ConnectionLost, side="caller") == ["EngineFault"]
    assert engine.view.status is Status.NEW


def test_the_status_follows_the_call() -> None:
    engine = AdmittingEngine("c")
    view = engine.view
    assert view.status is Status.NEW
    _feed(engine, ev.SessionInitiated, config=ev.CallConfig(), offered_formats=("raw/mulaw",))
    assert view.status is Status.ACTIVE and not view.ended
    _feed(engine, ev.ConnectionLost, side="caller")
    assert view.status is Status.SUSPENDED
    assert _feed(engine, ev.SessionResumed)[0] == "SessionAccepted"
    assert view.status is Status.ACTIVE
    _feed(engine, ev.SessionEnded, reason="bye")
    assert view.status is Status.ENDED and view.ended
    assert _feed(engine, ev.Dtmf, digits="1") == []  # nothing follows CallEnded


def test_the_view_is_read_only() -> None:
    engine = engine_for(_initiated())
    view = engine.view
    assert isinstance(view, EngineView) and engine.view is view
    with pytest.raises(AttributeError):
        view.status = Status.ENDED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        view.extra = 1  # type: ignore[attr-defined]
    assert view.playing is None and not view.plays("item")


def test_admission_is_settled_outside_the_core() -> None:
    a = admit(_initiated())
    assert a == Admission(
        agent=get_agent("default"), media_format="raw/mulaw", model_format="audio/pcmu"
    )
    assert "unknown agent" in admit(_initiated(agent="nope")).refused
    live = admit(_initiated(model="gpt-live-1.1"))
    assert live.model_format == "audio/pcmu" and not live.refused

    def broken(name: str) -> object:
        raise RuntimeError("boom")

    fault = admit(_initiated(), broken)  # type: ignore[arg-type]
    assert fault.fault == "RuntimeError: boom"
    engine = Engine("c", admission=fault)
    assert _feed(engine, ev.SessionInitiated, config=ev.CallConfig()) == ["EngineFault"]


def test_an_engine_without_admission_rejects_the_call() -> None:
    engine = Engine("c")
    out = _feed(engine, ev.SessionInitiated, config=ev.CallConfig())
    assert out == ["SessionRejected", "CallEnded"] and engine.view.ended


def test_the_status_changes_in_one_place() -> None:
    """Every status change goes through Engine._to (the table), none around it."""
    import inspect

    from fastagent import core

    source = inspect.getsource(core)
    assert source.count("self.status = ") == 1
    assert "self.status = next_status(self.status, trigger)" in source


@pytest.mark.anyio
async def test_a_call_dials_its_own_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model to dial is the call's (its accepted CallConfig, read through the
    view), not the setting of the instance that happens to drive it now."""
    from types import SimpleNamespace

    from fastagent.service import realtime_link

    engine = engine_for(_initiated(model="gpt-realtime-2025-08-28"))
    _feed(engine, ev.SessionInitiated, config=ev.CallConfig(model="gpt-realtime-2025-08-28"))
    assert engine.view.model == "gpt-realtime-2025-08-28"
    dialled: list[str | None] = []

    async def connect(**kw: object) -> None:
        dialled.append(kw["model"])  # type: ignore[arg-type]

    monkeypatch.setattr(realtime_link, "connect_realtime", connect)
    config = SimpleNamespace(model="gpt-realtime-2", model_max_frame_bytes=1 << 20)
    service = SimpleNamespace(config=config, openai_client=lambda: None)
    await realtime_link.dial_model(service, engine.view.model)  # type: ignore[arg-type]
    assert dialled == ["gpt-realtime-2025-08-28"]  # never the instance's "gpt-realtime-2"
