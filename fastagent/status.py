"""The call's status in the engine core, and the one table of its legal changes.

In the manner of h11's ``_state.py``: the statuses are an enum, the triggers are an
enum, and :data:`TRANSITIONS` maps every legal ``(status, trigger)`` to the status
it leads to.  The engine changes status only through :func:`next_status`; a pair
missing from the table raises :class:`IllegalTransition`, which the engine turns
into an ``EngineFault`` decision for the input that caused it (nothing else is
decided for that input), so an impossible sequence of inputs is recorded, never
acted on.

The life of a call: ``new`` -> ``active`` (accepted) or ``ended`` (rejected);
``active`` <-> ``suspended`` while the caller's socket is away and comes back;
``ending`` once a hangup or transfer is decided (back to ``active`` if the caller
talks over the goodbye); ``closing`` while tool calls that already started
finish after the call is over; ``ended`` when ``CallEnded`` is in the log.
"""

from __future__ import annotations

import enum

from fastagent.errors import FastAgentError


class Status(enum.Enum):
    """Where a call stands, as the core sees it."""

    NEW = "new"  # no session.initiate decided yet
    ACTIVE = "active"  # the caller is connected and the call goes on
    SUSPENDED = "suspended"  # the caller's socket dropped: a resume may come (grace)
    ENDING = "ending"  # a hangup or transfer was decided: waiting for the line to close
    CLOSING = "closing"  # the call is over, but tool calls still run: their results close it
    ENDED = "ended"  # CallEnded is in the log: nothing follows


class Trigger(enum.Enum):
    """What moves the status: each names the decision (or input) that causes it."""

    ACCEPT = "accept"  # SessionAccepted for session.initiate
    REJECT = "reject"  # SessionRejected for session.initiate (then CallEnded)
    CALLER_LOST = "caller_lost"  # ConnectionLost(side=caller)
    RESUME = "resume"  # SessionAccepted(resumed=True) for session.resume
    HANG_UP = "hang_up"  # HangupRequested or TransferRequested
    STAY = "stay"  # the caller talked over the goodbye: the call goes on
    WAIT_TOOLS = "wait_tools"  # the call ends once the tool calls still running finish
    END = "end"  # CallEnded


S, T = Status, Trigger

TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (S.NEW, T.ACCEPT): S.ACTIVE,
    (S.NEW, T.REJECT): S.ENDED,
    (S.ACTIVE, T.CALLER_LOST): S.SUSPENDED,
    (S.ACTIVE, T.RESUME): S.ACTIVE,  # a new socket replaced one that never said it left
    (S.ACTIVE, T.HANG_UP): S.ENDING,
    (S.ACTIVE, T.WAIT_TOOLS): S.CLOSING,
    (S.ACTIVE, T.END): S.ENDED,
    (S.SUSPENDED, T.CALLER_LOST): S.SUSPENDED,
    (S.SUSPENDED, T.RESUME): S.ACTIVE,
    # A goodbye's response finished while the caller was away: the hangup is decided.
    (S.SUSPENDED, T.HANG_UP): S.ENDING,
    (S.SUSPENDED, T.WAIT_TOOLS): S.CLOSING,
    (S.SUSPENDED, T.END): S.ENDED,
    (S.ENDING, T.STAY): S.ACTIVE,
    (S.ENDING, T.HANG_UP): S.ENDING,  # another response ended with the control still owed
    (S.ENDING, T.RESUME): S.ACTIVE,  # the caller came back before the line closed
    (S.ENDING, T.WAIT_TOOLS): S.CLOSING,
    (S.ENDING, T.END): S.ENDED,
    (S.CLOSING, T.END): S.ENDED,  # the last running tool call finished
}
del S, T


class IllegalTransition(FastAgentError):
    """A status change the table does not allow (a bug, or inputs out of order).

    Raised inside the engine's handler and recorded as an ``EngineFault``; it
    never leaves :meth:`fastagent.core.Engine.handle`.
    """

    def __init__(self, status: Status, trigger: Trigger) -> None:
        super().__init__(f"{trigger.value} is not allowed while the call is {status.value}")
        self.status = status
        self.trigger = trigger


def next_status(status: Status, trigger: Trigger) -> Status:
    """The status ``trigger`` leads to from ``status``; raises IllegalTransition."""
    try:
        return TRANSITIONS[(status, trigger)]
    except KeyError:
        raise IllegalTransition(status, trigger) from None
