"""The model link: the one interface between a call and its speech-to-speech model.

A call talks to its model through a :class:`ModelLink`; the Realtime API is one
implementation (:class:`fastagent.service.realtime_link.RealtimeLink`), GPT-Live
another.  The link owns the model's socket and its wire protocol; the call
(:class:`fastagent.service.call.CallSession`) owns the log, the engine, the
timers and the reconnect policy.  Nothing of the core changes when a link is
added: links speak *events* (``fastagent.events``) to the call, wire frames to
the model.

The contract, in the order a call uses it::

    link = RealtimeLink(call, dial)        # call: the ModelEvents below
    await link.connect()                   # dial once; raises if it cannot
    awaited = await link.configure(d, seed)          # d: ev.ModelConfigured
    await link.send_audio(b64)             # caller audio, base64 in the model's format
    awaited = await link.send(d)           # any decision of MODEL_DECISIONS
    ...                                    # frames arrive: the link calls the ModelEvents
    await link.close()

``configure`` and ``send`` return what the model is expected to answer, as
``(waiting_for, event_id)`` (e.g. ``("response.created", "fa-response-7")``), or
None: the call times the answer and records a ``ModelTimeout`` naming it if it
does not come; the link reports the answer with :meth:`ModelEvents.model_answered`.

Audio has a fast lane besides (see :mod:`fastagent.sockets`): from a socket's data
callback, where nothing may be awaited.  ``writable_now`` / ``audio_frame`` /
``write_now`` send caller audio that way; incoming model audio is offered to
:meth:`ModelEvents.model_audio_now` first and takes the ordered slow lane
(:meth:`ModelEvents.model_audio`) when it is refused.  A link without such a
socket returns False from ``writable_now`` and never calls ``model_audio_now``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from fastagent import events as ev

# The decisions a link sends (ModelConfigured goes through configure).
MODEL_DECISIONS: tuple[type[ev.Decision], ...] = (
    ev.TruncateRequested,
    ev.ResponseRequested,
    ev.ItemDeleted,
    ev.FunctionOutputSent,
    ev.MessageInjected,
    ev.ContextAppended,  # GPT-Live only (the core makes none for Realtime)
    ev.ItemHeard,  # GPT-Live only
)

Awaited = tuple[str, str] | None  # (waiting_for, event_id) the model should answer


class ModelAudio(Protocol):
    """One chunk of model audio: base64 ``delta`` in the model's output format, of
    item ``item_id`` in response ``response_id`` (Realtime's AudioDelta has these)."""

    delta: str
    item_id: str
    response_id: str


class ModelEvents(Protocol):
    """What a model link reports to its call (implemented by CallSession)."""

    # Set while the call may act on model frames; the link's reader waits while it
    # is clear (a resume hands the call to a new caller socket meanwhile).
    handover: asyncio.Event

    async def model_input(self, cls: type[ev.Input], **fields: Any) -> None:
        """The model said something the engine must hear: record it as ``cls``."""

    async def model_audio(self, audio: ModelAudio) -> None:
        """A chunk of audio, on the ordered slow lane."""

    def model_audio_now(self, audio: ModelAudio) -> bool:
        """A chunk of audio from the socket's data callback: True if it was handled
        (recorded and forwarded), False to leave it to the slow lane."""

    def model_audio_writable(self) -> bool:
        """The caller side can take a forwarded chunk at once (the fast lane may run)."""

    def model_sample_bytes(self) -> int:
        """Bytes per sample of the model's audio (bot audio must be whole samples)."""

    def model_answered(self, waiting_for: str) -> None:
        """The model answered what ``configure``/``send`` said it would."""

    async def model_protocol_error(self, message: str) -> None:
        """A frame from the model was rejected (recorded, one log line)."""

    async def model_failed(self, exc: BaseException) -> None:
        """The model's socket failed or closed: the link is done."""


class ModelLink(abc.ABC):
    """One model session of one call (see the module docstring for the contract)."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Dial the model once and start reading it; raises if it cannot connect."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """A socket is open (frames can be sent)."""

    @abc.abstractmethod
    async def configure(self, d: ev.ModelConfigured, seed: Sequence[tuple[str, str]]) -> Awaited:
        """Tell the model what ``d`` says, built from the decision alone: its
        instructions, tools (full specs: name, description, JSON-schema
        parameters), voice and audio formats; then, if ``seed`` is not empty, the
        conversation so far as ``(role, text)`` pairs (a fresh session)."""

    @abc.abstractmethod
    async def send_audio(self, b64: str) -> None:
        """Send caller audio (base64, already in the model's input format)."""

    @abc.abstractmethod
    async def send(self, d: ev.Decision) -> Awaited:
        """Send one decision of :data:`MODEL_DECISIONS`."""

    @abc.abstractmethod
    def writable_now(self) -> bool:
        """Fast lane: a frame may be written now, with no await."""

    @abc.abstractmethod
    def audio_frame(self, b64: str) -> Any:
        """Fast lane: the frame that carries caller audio ``b64`` (built before the
        chunk is recorded, so a failure never records it twice)."""

    @abc.abstractmethod
    def write_now(self, frame: Any) -> None:
        """Fast lane: write a frame from :meth:`audio_frame` (check writable_now)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop reading and close the socket (idempotent; never raises)."""


__all__ = ["MODEL_DECISIONS", "Awaited", "ModelAudio", "ModelEvents", "ModelLink"]
