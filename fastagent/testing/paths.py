"""Scripted calls for the paths a demo scenario cannot reach, driven through the real core.

A demo scenario (``fastagent/examples/scenarios/*.json``) plays a call over real sockets
against the fake model; it cannot make a caller's socket drop and come back on
another instance, a model socket close mid-response, a tool time out, or the
model ask for 33 function calls at once.  Each path here scripts the *inputs*
the shell records in that situation -- in the order and shape the shell's code
records them (see ``fastagent.service``) -- and feeds them one by one through
:class:`~fastagent.core.Engine`, so every decision in the written recording is
one today's core made.  ``scripts/record_replays.py`` writes them to
``replays/path-*.jsonl``; the replay tests then hold the core to them.

Times advance on a fake clock (``Call.now``, µs), ids are derived from the
path's name: re-recording gives byte-identical files.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from fastagent import events as ev
from fastagent.admission import engine_for
from fastagent.core import ENGINE_SERVER, Engine

INSTANCE_A = "host-a:1001"
INSTANCE_B = "host-b:2002"
CHUNK_US = 20_000
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


class Call:
    """One scripted call: feed inputs, answer what the core decides, keep the log."""

    def __init__(self, name: str, agent: str = "default", **config: Any) -> None:
        self.name = name
        self.call_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fastagent-path:{name}"))
        self.engine = Engine(self.call_id)
        self.log: list[ev.Event] = []
        self.now = T0
        self.agent = agent
        self.config = ev.CallConfig(agent=agent, playback_speed=1.0, **config)
        self.ids = 0
        self.chunk_in = 0
        self.chunk_out = 0
        self.dispatched: list[ev.FunctionCallDispatched] = []  # external, awaiting a result

    # ------------------------------------------------------------ plumbing

    def _id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}_{self.ids}"

    def wait(self, ms: float) -> None:
        self.now += int(ms * 1000)

    def feed(self, cls: type[ev.Input], **fields: Any) -> list[ev.Decision]:
        inp = cls(call_id=self.call_id, seq=self.engine.view.next_seq, at=self.now, **fields)
        if isinstance(inp, ev.SessionInitiated):
            self.engine = engine_for(inp)  # agent and formats settled as the shell does
        out = self.engine.handle(inp)
        self.log.append(inp)
        self.log.extend(out)
        for d in out:
            if isinstance(d, ev.FunctionCallDispatched) and d.server != ENGINE_SERVER:
                self.dispatched.append(d)
        return out

    def caller_audio(self, chunks: int) -> None:
        for _ in range(chunks):
            self.chunk_in += 1
            self.wait(20)
            self.feed(ev.CallerAudio, chunk=self.chunk_in, nbytes=160, duration_us=CHUNK_US,
                      fmt="raw/mulaw")  # fmt: skip

    # --------------------------------------------------------------- call

    def start(self, tools: dict[str, tuple[str, ...]] | None = None, greet: bool = True) -> None:
        """session.initiate, the MCP servers' tool lists, the start activity, greeting."""
        self.feed(
            ev.SessionInitiated,
            config=self.config,
            caller="+15550100",
            bot_name="fastagent",
            offered_formats=("raw/mulaw",),
            instance=INSTANCE_A,
        )
        for server, names in (tools or {}).items():
            specs = tuple(
                ev.ToolSpec(
                    name=n,
                    description=f"{n.replace('_', ' ')}.",
                    parameters={"type": "object", "properties": {}},
                    server=server,
                )
                for n in names
            )
            self.wait(30)
            self.feed(ev.ToolsListed, server=server, tools=specs)
        self.feed(ev.CallStarted, caller="+15550100", callee="+15550199")
        self.feed(ev.CallerStreamStarted)
        if greet and self.requested():
            self.bot("Hello, how can I help you today?")

    def requested(self) -> bool:
        """Whether the core asked for a response that has not started yet."""
        return self.engine.view.response_active and not self._started

    _started = False

    def says(self, text: str) -> None:
        """The caller speaks: VAD start, audio, VAD stop, commit, transcript."""
        self.wait(300)
        item = self._id("item")
        self.feed(ev.SpeechStarted, item_id=item, audio_start_ms=(self.now - T0) // 1000)
        self.caller_audio(max(3, len(text.split()) // 2))
        self.feed(ev.SpeechStopped, item_id=item, audio_end_ms=(self.now - T0) // 1000)
        self.feed(ev.SpeechCommitted, item_id=item)
        self.feed(ev.Transcript, role="user", item_id=item, text=text)

    def bot(
        self,
        text: str = "",
        calls: tuple[tuple[str, dict[str, Any] | str], ...] = (),
        *,
        status: str = "completed",
        barge_in_after: int | None = None,
        drop_after: int | None = None,
        drain: bool = True,
    ) -> str:
        """The model answers: a response with ``text`` spoken and ``calls`` made.

        ``barge_in_after``: the caller starts speaking after that many audio chunks
        (the model then cancels the response).  ``drop_after``: the model socket
        closes after that many chunks (the response is gone with it).  ``drain``:
        feed PlaybackDrained when the core holds calls until the caller heard the
        response, as the shell's timer does.
        """
        rid = self._id("resp")
        self._started = True
        self.wait(250)
        self.feed(ev.ResponseStarted, response_id=rid)
        item = self._id("item")
        chunks = max(2, min(12, len(text) * 15 // 20)) if text else 0
        for n in range(chunks):
            self.chunk_out += 1
            self.wait(8)  # the model sends faster than real time
            self.feed(ev.BotAudio, response_id=rid, item_id=item, chunk=self.chunk_out,
                      nbytes=160, duration_us=CHUNK_US, fmt="audio/pcmu")  # fmt: skip
            if n % 3 == 2:
                self.caller_audio(1)
            if barge_in_after is not None and n + 1 == barge_in_after:
                self.feed(ev.SpeechStarted, item_id=self._id("item"), audio_start_ms=0)
                self.wait(40)
                self.feed(ev.ResponseDone, response_id=rid, status="cancelled",
                          reason="turn_detected")  # fmt: skip
                self._started = False
                return rid
            if drop_after is not None and n + 1 == drop_after:
                self.feed(
                    ev.ConnectionLost, side="model", reason="received 1006 (abnormal closure)"
                )
                self._started = False
                return rid
        if text:
            self.feed(ev.Transcript, role="assistant", item_id=item, text=text, response_id=rid)
        for name, args in calls:
            arguments = args if isinstance(args, str) else json.dumps(args)
            self.feed(ev.FunctionCallRequested, response_id=rid, item_id=self._id("item"),
                      tool_call_id=self._id("call"), name=name, arguments=arguments)  # fmt: skip
        self.wait(20)
        self.feed(ev.ResponseDone, response_id=rid, status=status,
                  usage=ev.Usage(input_tokens=90, output_tokens=20, total_tokens=110))  # fmt: skip
        self._started = False
        pb = self.engine.view.playing
        if drain and pb is not None and self.engine.view.held_response == pb.response_id:
            self.now = max(self.now, pb.until + 1000)
            self.feed(ev.PlaybackDrained, stream_id=pb.stream_id, response_id=pb.response_id)
        return rid

    def result(
        self,
        name: str,
        output: dict[str, Any] | str | None = None,
        *,
        error: str = "",
        ms: float = 40,
    ) -> None:
        """The oldest running call of tool ``name`` finishes: ok with ``output``, or
        failed with ``error``."""
        d = next(d for d in self.dispatched if d.name == name)
        self.dispatched.remove(d)
        self.wait(ms)
        text = output if isinstance(output, str) else json.dumps(output or {})
        self.feed(
            ev.ToolResult,
            tool_call_id=d.tool_call_id,
            name=name,
            ok=not error,
            output="" if error else text,
            error=error,
            duration_us=int(ms * 1000),
        )

    def answer(self, text: str = "Okay.", **kw: Any) -> None:
        """The model answers a response the core requested (if it did)."""
        if self.requested():
            self.bot(text, **kw)

    def hang_up(self) -> None:
        """The caller hangs up (VAIC session.end)."""
        if not self.engine.view.ended:
            self.wait(200)
            self.feed(ev.SessionEnded, reason_code="client-disconnected", reason="caller hung up")

    def bot_hangs_up(self) -> None:
        """The bot said goodbye and asked to hang up: VAIC ends the session."""
        self.wait(200)
        self.feed(ev.SessionEnded, reason_code="bot-disconnected", reason="bot ended the call")


# ------------------------------------------------------------------ the paths

_PATHS: dict[str, Callable[[], Call]] = {}


def path(fn: Callable[[], Call]) -> Callable[[], Call]:
    _PATHS[fn.__name__.replace("_", "-")] = fn
    return fn


def paths() -> dict[str, Callable[[], Call]]:
    """Every scripted path by name (the recording is ``replays/path-<name>.jsonl``)."""
    return dict(_PATHS)


def _goodbye(c: Call) -> None:
    c.says("Thanks, that is all, goodbye")
    c.bot("You're welcome.", (("end_call", {"reason": "caller said goodbye"}),))
    c.answer("Goodbye!")
    c.bot_hangs_up()


# Caller side ---------------------------------------------------------------------


@path
def caller_resume_same_instance() -> Call:
    """The caller's socket drops while the bot speaks; VAIC resumes on the same instance."""
    c = Call("caller-resume-same-instance")
    c.start()
    c.says("What are your opening hours on Saturday")
    c.bot("We are open from nine to five on Saturdays, and closed on Sundays.")
    c.feed(ev.ConnectionLost, side="caller", reason="socket closed")  # mid-playback
    c.wait(2_500)
    c.feed(ev.SessionResumed, instance=INSTANCE_A)
    c.feed(ev.CallerStreamStarted)
    c.says("Sorry, the line dropped. Saturday hours again please")
    c.bot("Nine to five on Saturdays.")
    _goodbye(c)
    return c


@path
def caller_resume_other_instance() -> Call:
    """The caller comes back through another instance, which claims the call, drops the
    old model session and opens its own (seeded from the log)."""
    c = Call("caller-resume-other-instance", agent="banking")
    c.start({"bank": ("find_customer", "verify_customer", "order_replacement_card")})
    c.says("I lost my card")
    c.bot("", (("start_card_replacement", {}),))
    c.answer("I can help. What is your customer number?")
    c.feed(ev.ConnectionLost, side="caller", reason="socket closed")
    c.wait(4_000)
    c.feed(ev.SessionResumed, instance=INSTANCE_B)
    c.feed(ev.ConnectionLost, side="model", reason=f"call resumed on {INSTANCE_B}")
    c.feed(ev.ConnectionRestored, side="model", instance=INSTANCE_B)
    c.feed(ev.CallerStreamStarted)
    c.says("It is one two three four five six")
    c.bot("", (("provide_customer_number", {"customer_id": "123456"}),))
    c.result("find_customer", {"ok": True, "found": True, "name": "Ada Lovelace"})
    c.answer("Thanks. Your date of birth and the card's last four digits?")
    c.says("Never mind, I will call back later, bye")
    c.bot("Of course.", (("cancel_card_replacement", {}),))
    c.answer("Goodbye!")
    c.hang_up()
    return c


@path
def grace_expired() -> Call:
    """The caller drops mid-task and never comes back: the grace runs out."""
    c = Call("grace-expired", agent="banking", grace_s=5.0)
    c.start({"bank": ("find_customer", "verify_customer", "order_replacement_card")})
    c.says("What is my balance")
    c.bot("", (("start_balance_inquiry", {}),))
    c.answer("Sure. Your customer number, date of birth and card's last four digits?")
    c.feed(ev.ConnectionLost, side="caller", reason="socket closed")
    c.wait(5_000)
    c.feed(ev.GraceExpired, seconds=c.engine.view.policy.grace_s)
    return c


@path
def greet_false_transfer_override() -> Call:
    """greet=false (the caller speaks first) and a transfer target set by the operator."""
    c = Call(
        "greet-false-transfer-override",
        agent="banking",
        greet=False,
        transfer_target="sip:cards-team@pbx.example",
    )
    c.start({"bank": ("find_customer", "verify_customer", "order_replacement_card")})
    c.says("Hello? I want to speak to a person please")
    c.bot("Of course, one moment.", (("transfer_to_human", {"reason": "asked for a person"}),))
    c.answer("I am transferring you now.")
    c.wait(1_000)
    c.feed(ev.SessionEnded, reason_code="transferred", reason="transferred by the bot")
    return c


@path
def caller_keys_dtmf() -> Call:
    """The caller keys in their customer number (DTMF, enabled by the session params)."""
    c = Call("caller-keys-dtmf", agent="banking")
    c.start({"bank": ("find_customer", "verify_customer", "order_replacement_card")})
    c.says("My card was stolen")
    c.bot("", (("start_card_replacement", {}),))
    c.answer("I am sorry. Please key in your customer number.")
    c.wait(1_500)
    # A key VAIC should never send: recorded as a protocol violation, nothing decided.
    c.feed(ev.ProtocolError, side="caller", message="DTMF value 'X' is not 0-9, *, # or A-D")
    c.feed(ev.Dtmf, digits="123456")
    c.bot("", (("provide_customer_number", {"customer_id": "123456"}),))
    c.result("find_customer", {"ok": True, "found": True, "name": "Ada Lovelace"})
    c.answer("Thank you. Your date of birth and the card's last four digits?")
    c.says("Actually stop, I found it")
    c.bot("Glad to hear it.", (("cancel_card_replacement", {}),))
    c.answer("Anything else?")
    c.hang_up()
    return c


@path
def session_rejected() -> Call:
    """VAIC offers no audio format FastAgent can bridge: the session is refused."""
    c = Call("session-rejected")
    c.feed(
        ev.SessionInitiated,
        config=c.config,
        caller="+15550100",
        bot_name="fastagent",
        offered_formats=("wav/opus", "raw/g729"),
        instance=INSTANCE_A,
    )
    return c


# Model side ----------------------------------------------------------------------


@path
def model_drop_reconnect() -> Call:
    """The model socket closes mid-response with a function call in it: the call is
    skipped, the service reconnects, reconfigures and asks for the answer again."""
    c = Call("model-drop-reconnect")
    c.start()
    c.says("Please press one for me, the menu is asking")
    rid = c._id("resp")
    c._started = True
    c.feed(ev.ResponseStarted, response_id=rid)
    c.feed(ev.FunctionCallRequested, response_id=rid, item_id=c._id("item"),
           tool_call_id=c._id("call"), name="send_dtmf", arguments='{"digits": "1"}')  # fmt: skip
    c.wait(30)
    c.feed(ev.ConnectionLost, side="model", reason="received 1011 (internal error)")
    c._started = False
    c.wait(400)
    c.feed(ev.ConnectionRestored, side="model", instance=INSTANCE_A)
    c.bot("Pressing one now.", (("send_dtmf", {"digits": "1"}),))
    c.answer("Done.")
    c.says("It says press two now")
    c.bot("Okay, I am pressing two.", drop_after=3)  # dropped mid-speech
    c.wait(300)
    c.feed(ev.ConnectionRestored, side="model", instance=INSTANCE_A)
    c.bot("", (("send_dtmf", {"digits": "2"}),))
    c.answer("Pressed two.")
    _goodbye(c)
    return c


@path
def model_drop_history_folded() -> Call:
    """A model session re-established late in a call whose policy keeps two turns as
    conversation items: the new session is told the older turns folded into one
    summary (ModelConfigured.history), without the bot's words the caller never
    heard (a second output item deleted after a barge-in)."""
    c = Call("model-drop-history-folded", history_items=2)
    c.start()
    c.says("What are your opening hours")
    # One response, two output items: the caller cuts in while the first plays,
    # so the second (sent ahead, not yet played) is deleted, never heard.
    rid = c._id("resp")
    c._started = True
    c.wait(250)
    c.feed(ev.ResponseStarted, response_id=rid)
    first, second = c._id("item"), c._id("item")
    for item in (first, first, first, second, second):
        c.chunk_out += 1
        c.wait(8)
        c.feed(ev.BotAudio, response_id=rid, item_id=item, chunk=c.chunk_out,
               nbytes=160, duration_us=CHUNK_US, fmt="audio/pcmu")  # fmt: skip
    c.feed(ev.Transcript, role="assistant", item_id=first, text="We open at nine.",
           response_id=rid)  # fmt: skip
    c.feed(ev.SpeechStarted, item_id=c._id("item"), audio_start_ms=0)
    c.feed(ev.Transcript, role="assistant", item_id=second, text="And we close at six.",
           response_id=rid)  # fmt: skip
    c.wait(40)
    c.feed(ev.ResponseDone, response_id=rid, status="cancelled", reason="turn_detected")
    c._started = False
    c.says("And on Sundays?")
    c.bot("On Sundays we open at ten.")
    c.says("Thanks, that is all")
    c.feed(ev.ConnectionLost, side="model", reason="received 1006 (abnormal closure)")
    c.wait(300)
    c.feed(ev.ConnectionRestored, side="model", instance=INSTANCE_A)
    c.answer("You are welcome. Goodbye.")
    _goodbye(c)
    return c


@path
def calls_skipped_interrupted() -> Call:
    """Function calls of a response the caller interrupts never run: a call held while
    the caller still hears the response, and one in a cancelled response."""
    c = Call("calls-skipped-interrupted")
    c.start()
    c.says("Okay I think we are done here")
    c.bot(
        "Alright, thank you for calling, I will end the call now. Have a lovely day.",
        (("end_call", {"reason": "caller is done"}),),
        drain=False,
    )
    # The caller still hears the goodbye (the end_call is held until they heard it out)
    # and barges in: the held call is skipped, the goodbye truncated.
    c.feed(ev.SpeechStarted, item_id=c._id("item"), audio_start_ms=0)
    c.says("Wait, one more question")
    c.bot("Of course, what is it?")
    c.says("And what are your opening hours")
    rid = c._id("resp")  # the caller cuts in while the bot is still speaking ...
    c._started = True
    c.feed(ev.ResponseStarted, response_id=rid)
    item = c._id("item")
    for _ in range(6):
        c.chunk_out += 1
        c.wait(8)
        c.feed(ev.BotAudio, response_id=rid, item_id=item, chunk=c.chunk_out, nbytes=160,
               duration_us=CHUNK_US, fmt="audio/pcmu")  # fmt: skip
    c.feed(ev.SpeechStarted, item_id=c._id("item"), audio_start_ms=0)
    # ... and the model still completes that response, with a call in it: never run.
    c.feed(ev.FunctionCallRequested, response_id=rid, item_id=c._id("item"),
           tool_call_id=c._id("call"), name="end_call", arguments="{}")  # fmt: skip
    c.feed(ev.ResponseDone, response_id=rid, status="completed")
    c._started = False
    c.says("Press star for me")
    rid = c._id("resp")
    c._started = True
    c.feed(ev.ResponseStarted, response_id=rid)
    c.feed(ev.FunctionCallRequested, response_id=rid, item_id=c._id("item"),
           tool_call_id=c._id("call"), name="send_dtmf", arguments='{"digits": "*"}')  # fmt: skip
    c.feed(ev.SpeechStarted, item_id=c._id("item"), audio_start_ms=0)
    c.feed(ev.ResponseDone, response_id=rid, status="cancelled", reason="turn_detected")
    c._started = False
    c.says("No, do not press anything")
    c.bot("Okay, I won't.")
    _goodbye(c)
    return c


@path
def too_many_calls() -> Call:
    """A response with more function calls than one response may make (32)."""
    c = Call("too-many-calls")
    c.start()
    c.says("Type the whole code for me")
    c.bot("", tuple(("send_dtmf", {"digits": str(n % 10)}) for n in range(33)))
    c.answer("That was a lot of keys.")
    _goodbye(c)
    return c


@path
def unknown_tool_send_dtmf() -> Call:
    """The model calls a tool that does not exist, sends DTMF (good and bad digits) and
    calls a tool with arguments that are not JSON."""
    c = Call("unknown-tool-send-dtmf")
    c.start()
    c.says("Can you book me a flight to Lisbon")
    c.bot("", (("book_flight", {"to": "LIS"}),))
    c.answer("Sorry, I cannot book flights.")
    c.says("Then enter four four seven and hash")
    c.bot("", (("send_dtmf", {"digits": "447#"}),))
    c.answer("Entered.")
    c.says("And the letters A B C")
    c.bot("", (("send_dtmf", {"digits": "ABC"}),))
    c.answer("I can only press digits, star and hash.")
    c.says("Arguments are broken")
    c.bot("", (("send_dtmf", "{not json"),))
    c.answer("Sorry, something went wrong.")
    _goodbye(c)
    return c


# Tools ---------------------------------------------------------------------------

_CLINIC = {"clinic": ("find_patient", "list_free_slots", "book_appointment")}
_SLOTS = {
    "ok": True,
    "found": True,
    "slots": [{"slot_id": "S101", "doctor": "Dr Okafor", "starts_at": "2026-03-02T09:00"}],
}


@path
def tools_outside_fsa() -> Call:
    """An agent's own tool in open conversation: ok, failed, timed out, non-JSON output."""
    c = Call("tools-outside-fsa", agent="healthcare")
    c.start(_CLINIC)
    c.says("Is there anything free for physio on Monday")
    c.bot("Let me look.", (("list_free_slots", {"specialty": "physiotherapy"}),))
    c.result("list_free_slots", _SLOTS)
    c.answer("Yes, Dr Okafor at nine on Monday.")
    c.says("And dermatology")
    c.bot("", (("list_free_slots", {"specialty": "dermatology"}),))
    c.result("list_free_slots", error="server 'clinic' is not connected", ms=5)
    c.answer("Sorry, I cannot see the calendar right now.")
    c.says("Try general practice")
    c.bot("", (("list_free_slots", {"specialty": "general"}),))
    c.result("list_free_slots", error="list_free_slots timed out after 10 s", ms=10_000)
    c.answer("The calendar is not answering, sorry.")
    c.says("Try again please")
    c.bot("", (("list_free_slots", {"specialty": "general"}),))
    c.result("list_free_slots", "Dr Shah has a free slot on Tuesday at 14:30", ms=80)
    c.answer("Dr Shah, Tuesday at half past two.")
    _goodbye(c)
    return c


@path
def tools_running_at_hangup() -> Call:
    """The caller hangs up while a tool runs: the log closes only after its result."""
    c = Call("tools-running-at-hangup", agent="healthcare")
    c.start(_CLINIC)
    c.says("What is free for general practice")
    c.bot("One moment.", (("list_free_slots", {"specialty": "general"}),))
    c.feed(ev.CallerStreamStopped)
    c.hang_up()
    c.result("list_free_slots", _SLOTS, ms=600)
    return c


# Every transition of the example agents that the demo scenarios do not take ------------

_BANK = {"bank": ("find_customer", "verify_customer", "order_replacement_card", "get_balance")}


@path
def banking_identify_locked() -> Call:
    """Three customer numbers that find nobody: identify -> locked, transfer."""
    c = Call("banking-identify-locked", agent="banking")
    c.start(_BANK)
    c.says("I need to replace my card")
    c.bot("", (("start_card_replacement", {}),))
    c.answer("Your customer number please?")
    c.says("It is one two three four five")
    c.bot("", (("provide_customer_number", {"customer_id": "12345"}),))  # one digit short
    c.answer("That number has five digits; customer numbers have six.")
    for n in ("111111", "222222", "333333"):
        c.says(f"It is {' '.join(n)}")
        c.bot("", (("provide_customer_number", {"customer_id": n}),))
        c.result("find_customer", {"ok": True, "found": False})
        c.answer("I could not find that number.")
    c.answer("I am transferring you to a colleague.")
    c.wait(500)
    c.feed(ev.SessionEnded, reason_code="transferred", reason="transferred by the bot")
    return c


@path
def banking_address_change_and_order_failed() -> Call:
    """confirm_address -> address_change; then, in a second run, the order fails."""
    c = Call("banking-address-change-and-order-failed", agent="banking")
    c.start(_BANK)
    verified = {"ok": True, "verified": True, "address": "12 Analytical Row, London N1 4AB"}
    for attempt in (1, 2):
        c.says("My card is damaged")
        c.bot("", (("start_card_replacement", {}),))
        c.answer("Your customer number?")
        c.says("One two three four five six")
        c.bot("", (("provide_customer_number", {"customer_id": "123456"}),))
        c.result("find_customer", {"ok": True, "found": True, "name": "Ada Lovelace"})
        c.answer("Date of birth and the card's last four digits?")
        c.says("Tenth of December eighty five, one eight eight one")
        args = {"date_of_birth": "1985-12-10", "card_last4": "1881"}
        c.bot("", (("verify_identity", args),))
        c.result("verify_customer", verified)
        c.answer("Shall we send it to 12 Analytical Row?")
        if attempt == 1:
            c.says("No, I moved last month")
            c.bot("", (("report_address_change", {}),))
            c.answer("Please update your address in the app first, then call us again.")
            continue
        c.says("Yes, that is right")
        c.bot("", (("confirm_delivery_address", {"confirmed": True}),))
        c.answer("Shall I order the replacement?")
        c.says("Yes please")
        c.bot("", (("confirm_card_replacement", {"reason": "damaged", "confirmed": True}),))
        c.result("order_replacement_card", {"ok": False, "ordered": False,
                                            "error": "card system unavailable"})  # fmt: skip
        c.answer("I am sorry, the order did not go through.")
    _goodbye(c)
    return c


@path
def healthcare_another_day_slot_taken() -> Call:
    """choose -> want (another day), then the chosen slot is taken: confirm -> choose."""
    c = Call("healthcare-another-day-slot-taken", agent="healthcare")
    c.start(_CLINIC)
    c.says("I'd like an appointment")
    c.bot("", (("start_appointment_booking", {}),))
    c.answer("Your last name and date of birth?")
    c.says("Lovelace, tenth of December eighty five")
    c.bot("", (("identify_patient", {"last_name": "Lovelace", "date_of_birth": "1985-12-10"}),))
    c.result("find_patient", {"ok": True, "found": True, "patient_id": "P1"})
    c.answer("What kind of appointment, and from when?")
    c.says("Dermatology, this Saturday")
    c.bot("", (("search_slots", {"specialty": "dermatology", "preferred_date": "2026-02-28"}),))
    c.result("list_free_slots", {"ok": True, "found": False, "slots": []})
    c.answer("Nothing is free then. Another day, or another kind of appointment?")
    c.says("General, from Monday")
    c.bot("", (("search_slots", {"specialty": "general", "preferred_date": "2026-03-02"}),))
    c.result("list_free_slots", _SLOTS)
    c.answer("Dr Okafor on Monday at nine?")
    c.says("No, Monday is bad, another day")
    c.bot("", (("search_other_day", {}),))
    c.answer("From which day?")
    c.says("Wednesday")
    c.bot("", (("search_slots", {"specialty": "general", "preferred_date": "2026-03-04"}),))
    wednesday = {**_SLOTS["slots"][0], "slot_id": "S205"}  # type: ignore[index]
    c.result("list_free_slots", {**_SLOTS, "slots": [wednesday]})
    c.answer("Dr Okafor on Wednesday at nine?")
    c.says("Yes that one")
    c.bot("", (("choose_slot", {"slot_id": "S205"}),))
    c.answer("Shall I book it?")
    c.says("Yes")
    c.bot("", (("confirm_booking", {"confirmed": True}),))
    c.result("book_appointment", {"ok": True, "booked": False, "error": "slot taken"})
    c.answer("Sorry, that slot was just taken. The others are...")
    c.says("Never mind then")
    c.bot("", (("cancel_appointment", {}),))
    c.answer("Okay.")
    _goodbye(c)
    return c


_SHOP = {"shop": ("get_order_status", "create_return")}
_ORDER = {
    "ok": True,
    "found": True,
    "order_number": "A1001",
    "status": "shipped",
    "carrier": "DHL",
    "tracking": "JD0146",
    "items": [{"sku": "BT-200", "name": "Trail boots", "returnable": True}],
}


@path
def retail_not_returnable() -> Call:
    """The order is not found, then the return cannot be created (confirm ->
    choose_item, not returnable); the caller asks for a person, and retail has no
    transfer target."""
    c = Call("retail-not-returnable", agent="retail")
    c.start(_SHOP)
    c.says("I want to return my boots")
    c.bot("", (("start_return", {}),))
    c.answer("Order number and postcode?")
    c.says("A one zero zero one, N1 4AA")
    c.bot("", (("identify_return_order", {"order_number": "A1001", "postal_code": "N1 4AA"}),))
    c.result("get_order_status", {"ok": True, "found": False})
    c.answer("I cannot find that order. Can you check the postcode?")
    c.says("Sorry, N1 4AB")
    c.bot("", (("identify_return_order", {"order_number": "A1001", "postal_code": "N1 4AB"}),))
    c.result("get_order_status", _ORDER)
    c.answer("Which item and why?")
    c.says("The boots, wrong size")
    args = {"sku": "BT-200", "return_reason": "wrong_size"}
    c.bot("", (("choose_return_item", args),))
    c.answer("Shall I create the return?")
    c.says("Yes")
    c.bot("", (("confirm_return", {"confirmed": True}),))
    c.result("create_return", {"ok": True, "created": False, "error": "return window closed"})
    c.answer("Sorry, that item can no longer be returned.")
    c.says("Okay, forget it. Let me talk to a human")
    c.bot("", (("cancel_return_item", {}),))
    c.answer("Okay, I cancelled the return.")
    # Retail has no transfer target: the tool is not offered, and if the model calls
    # it anyway it is told so.
    c.bot("", (("transfer_to_human", {"reason": "asked for a person"}),))
    c.answer("I am sorry, there is nobody to transfer you to; please email support.")
    _goodbye(c)
    return c


@path
def retail_parcel_tracking_in_background() -> Call:
    """The carrier lookup runs in the background (on_enter): the bot keeps talking and
    answers another question meanwhile; the result moves the FSA on (after).  The first
    lookup finds nothing (tracking -> ask), the second finds the parcel."""
    c = Call("retail-parcel-tracking-in-background", agent="retail")
    c.start(_SHOP)
    c.says("Where is my parcel right now")
    c.bot("", (("start_parcel_tracking", {}),))
    c.answer("Your order number and postcode?")
    c.says("A one zero zero nine, N1 4AB")
    c.bot("", (("track_parcel", {"order_number": "A1009", "postal_code": "N1 4AB"}),))
    c.answer("I am asking the carrier now, this takes a moment.")
    c.result("get_order_status", {"ok": True, "found": False}, ms=900)
    c.answer("The carrier found nothing for that number. Can you check it?")
    c.says("Sorry, A one zero zero one")
    c.bot("", (("track_parcel", {"order_number": "A1001", "postal_code": "N1 4AB"}),))
    c.answer("Checking with the carrier, one moment.")
    c.says("While you look, do you sell rain jackets")  # the conversation goes on
    c.bot("Yes, we have several rain jackets in the spring range.")
    c.result("get_order_status", _ORDER, ms=1_200)
    c.answer("Your parcel is with DHL, tracking JD0146, on its way.")
    _goodbye(c)
    return c


# GPT-Live ---------------------------------------------------------------------------


def _live_speak(c: Call, item: str, chunks: int, text: str) -> None:
    """GPT-Live output item ``item``: ``chunks`` of audio faster than real time, its
    transcript, then the output goes quiet (the link's idle watcher)."""
    for _ in range(chunks):
        c.chunk_out += 1
        c.wait(4)
        c.feed(ev.BotAudio, response_id=item, item_id=item, chunk=c.chunk_out, nbytes=160,
               duration_us=CHUNK_US, fmt="audio/pcmu")  # fmt: skip
    c.feed(ev.Transcript, role="assistant", item_id=item, text=text)
    c.wait(300)
    c.feed(ev.ModelOutputStopped, item_id=item, idle_ms=300)


@path
def live_barge_in_session_expiry() -> Call:
    """GPT-Live: the caller talks over audio VAIC still plays after the model's output
    stopped (ItemHeard: no truncate exists); a delegated end_call; the session
    expires mid-call (ModelSessionClosed), a new one is started seeded with the
    call, and the goodbye is said before the hangup."""
    c = Call("live-barge-in-session-expiry", model="gpt-live-1.1")
    c.start()  # the greeting goes in as commentary
    c.feed(ev.ModelSessionStarted, session_id="sess_1", model="gpt-live-1.1",
           expires_at=1_767_229_200)  # fmt: skip
    _live_speak(c, "s1-out-1", 40, "Hello, how can I help you today?")
    c.wait(100)  # 800 ms of 1,600 heard: the caller talks over the rest
    c.feed(ev.SpeechStarted, item_id="s1-in-1", audio_start_ms=1200)
    c.caller_audio(10)
    c.feed(ev.SpeechStopped, item_id="s1-in-1", audio_end_ms=1600)
    c.feed(ev.Transcript, role="user", item_id="s1-in-1", text="Sorry, I'm done, goodbye")
    c.feed(ev.DelegationStarted, delegation_id="dlg_1", target="responses",
           response_id="resp_1", offset_ms=1700)  # fmt: skip
    c.feed(ev.ResponseStarted, response_id="resp_1")
    c.feed(ev.FunctionCallRequested, response_id="resp_1", item_id="fc_1", tool_call_id="call_1",
           name="end_call", arguments='{"reason": "caller is done"}')  # fmt: skip
    c.feed(ev.ResponseDone, response_id="resp_1", status="completed",
           usage=ev.Usage(input_tokens=210, output_tokens=12, total_tokens=222))  # fmt: skip
    c.wait(50)
    c.feed(ev.ModelUsage, seconds=2.0, context_ratio=0.01)
    c.feed(ev.ModelSessionClosed, session_id="sess_1", reason="expired", seconds=2.0)
    c.feed(ev.ConnectionLost, side="model", reason="session.closed: expired")
    c.wait(200)
    c.feed(ev.ModelSessionStarted, session_id="sess_2", model="gpt-live-1.1",
           expires_at=1_767_229_300, seeded=2)  # fmt: skip
    c.feed(ev.ConnectionRestored, side="model", instance=INSTANCE_A)
    c.feed(ev.ResponseStarted, response_id="resp_2")
    c.feed(ev.ResponseDone, response_id="resp_2", status="completed",
           usage=ev.Usage(input_tokens=230, output_tokens=8, total_tokens=238))  # fmt: skip
    _live_speak(c, "s2-out-1", 10, "Goodbye!")
    c.bot_hangs_up()
    return c
