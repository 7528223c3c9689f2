"""``fastagent serve`` with bench-only switches, to decompose the service's cost.

bench/bench_bridge.py runs target ``service+a+b`` as this script with
``FASTAGENT_BENCH_VARIANT=a+b``.  Each switch changes one thing in this process
only (never in the service's code), so one bench run compares them side by side:

* ``nostore``:  EventStore.append does nothing (no mapping, no SQLite thread);
* ``nodb``:     append maps and buffers rows, the flusher drops them (mapping cost only);
* ``nolive``:   CallSession.record skips the live projection (live.apply);
* ``norecord``: audio chunks skip record() altogether (no event, engine, store or
  projection once playback is open): what is left is sockets and framing;
* ``nogc``:     the cyclic garbage collector off (is it behind the latency tails?);
* ``gcfreeze``: gc.freeze() once the app is built (start-up objects never rescanned);
* ``ws=NAME``:  uvicorn ``ws`` implementation (websockets-sansio, websockets, wsproto);
* ``loop=NAME``: uvicorn ``loop`` (uvloop, asyncio);
* ``http=NAME``: uvicorn ``http`` (httptools, h11; only the handshake uses it);
* ``nometrics``: FASTAGENT_METRICS=0 and no traces (what metrics and tracing cost);
* ``cprofile=NAME``: cProfile the main thread (the event loop) until the first
  signal, stats to NAME in $FASTAGENT_BENCH_OUT (default /tmp; read with pstats);
* ``traces``:   OpenTelemetry spans on (the SDK's batch processor, spans dropped
  by the exporter instead of sent: the service's cost without the collector's).

Deliberately broken services, for bench/kill9.py to show it sees the faults:

* ``nodurable``: decisions are sent without forcing the log durable first (the
  group commit catches up within FASTAGENT_FLUSH_MS): what a kill -9 exposes;
* ``noseed``:   a resumed model session is not told the conversation so far.

Run: FASTAGENT_BENCH_VARIANT=nostore python bench/service_variant.py serve --no-auth ...
"""

from __future__ import annotations

import os
from typing import Any


def apply(variant: str) -> None:
    switches = [s for s in variant.split("+") if s]
    overrides: dict[str, str] = {}
    for s in switches:
        key, _, value = s.partition("=")
        if value:
            if key == "gcthresh":  # gc.set_threshold(a, b, c), e.g. gcthresh=5000:20:100
                import gc

                gc.set_threshold(*(int(x) for x in value.split(":")))
                continue
            if key == "switch":  # sys.setswitchinterval(seconds): the GIL hand-over period
                import sys

                sys.setswitchinterval(float(value))
                continue
            if key == "cprofile":  # cProfile of the event loop's thread, dumped at exit
                import cProfile

                prof = cProfile.Profile()
                import uvicorn

                out = os.path.join(os.environ.get("FASTAGENT_BENCH_OUT", "/tmp"), value)
                import fastagent

                server_class = uvicorn.Server  # an older tree (--baseline)
                if os.path.exists(os.path.join(fastagent.__path__[0], "lifecycle.py")):
                    from fastagent.lifecycle import DrainingServer as server_class
                exit_handler = server_class.handle_exit

                def dump_then_exit(
                    self: Any,
                    sig: int,
                    frame: Any,
                    exit_handler: Any = exit_handler,
                    prof: Any = prof,
                    out: str = out,
                ) -> None:  # the first signal ends the profile (a drain is not measured)
                    prof.disable()
                    if not os.path.exists(out):
                        prof.dump_stats(out)
                    exit_handler(self, sig, frame)

                server_class.handle_exit = dump_then_exit  # type: ignore[method-assign]
                prof.enable()
                continue
            if key not in ("ws", "loop", "http"):
                raise SystemExit(f"unknown bench switch {s!r}")
            overrides[key] = value
        elif s == "nostore":
            from fastagent.store import EventStore

            EventStore.append = lambda self, batch: None  # type: ignore[method-assign]
        elif s == "nodb":
            from fastagent.store.writer import GroupCommitWriter

            GroupCommitWriter._insert = lambda self, pending: pending.clear()  # type: ignore[method-assign]
        elif s == "packed":  # estimate only: one row per call per flush (unreadable log)
            from fastagent.store.rows import _Row
            from fastagent.store.writer import GroupCommitWriter

            original_insert = GroupCommitWriter._insert_rows

            def packed(self: Any, rows: Any, original_insert: Any = original_insert) -> None:
                by_call: dict[str, list[Any]] = {}
                for r in rows:
                    by_call.setdefault(r.originator_id, []).append(r)
                out = [
                    _Row(
                        c,
                        rs[0].originator_version,
                        "Packed/v1",
                        b"[" + b",".join(r.state for r in rs) + b"]",
                    )
                    for c, rs in by_call.items()
                ]
                original_insert(self, out)

            GroupCommitWriter._insert_rows = packed  # type: ignore[method-assign]
        elif s == "nolive":
            from fastagent import service
            from fastagent.service.call import _Lost
            from fastagent.store import StreamConflict

            def record(self: Any, inp: Any) -> Any:
                decisions = self.engine.handle(inp)
                try:
                    self.store.append([inp, *decisions] if decisions else [inp])
                except StreamConflict:
                    raise _Lost(self.call_id) from None
                return decisions

            service.CallSession.record = record  # type: ignore[method-assign]
        elif s == "nometrics":
            os.environ["FASTAGENT_METRICS"] = "0"
            os.environ.pop("FASTAGENT_TRACES", None)
        elif s == "traces":
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                SpanExporter,
                SpanExportResult,
            )

            from fastagent import observe

            class Drop(SpanExporter):
                def export(self, spans: Any) -> SpanExportResult:
                    return SpanExportResult.SUCCESS

            def tracer_from_env() -> observe.Tracer:
                provider = TracerProvider()
                provider.add_span_processor(BatchSpanProcessor(Drop()))
                return observe.Tracer(provider.get_tracer("bench"), provider)

            observe.tracer_from_env = tracer_from_env  # type: ignore[assignment]
        elif s == "nodurable":
            from fastagent.service.call import CallSession

            async def durable(self: Any) -> bool:
                return True

            CallSession.durable = durable  # type: ignore[method-assign]
        elif s == "noseed":
            from fastagent import core

            core.seed_pairs = lambda *a, **k: []  # type: ignore[assignment]
        elif s == "nogc":
            import gc

            gc.disable()
        elif s == "gcfreeze":
            overrides.setdefault("_freeze", "1")
        elif s == "norecord":
            from fastagent import events as ev
            from fastagent import service

            original = service.CallSession.record

            def bare(self: Any, inp: Any, original: Any = original) -> Any:
                t = type(inp)
                if t is ev.CallerAudio:
                    return []
                if t is ev.BotAudio and self.engine.view.plays(inp.item_id):
                    return []
                return original(self, inp)

            service.CallSession.record = bare  # type: ignore[method-assign]
        else:
            raise SystemExit(f"unknown bench switch {s!r}")
    if overrides:
        from fastagent import lifecycle

        run = lifecycle.run

        def patched(app: Any, settings: dict[str, Any], **kwargs: Any) -> None:
            if overrides.pop("_freeze", ""):
                import gc

                import openai.resources.realtime.realtime  # noqa: F401  (what calls import)
                import websockets.asyncio.client  # noqa: F401

                gc.collect()
                gc.freeze()
            settings.update(overrides)
            run(app, settings, **kwargs)

        lifecycle.run = patched  # type: ignore[assignment]


if __name__ == "__main__":
    apply(os.environ.get("FASTAGENT_BENCH_VARIANT", ""))
    from fastagent.cli import main

    main()
