"""``fastagent serve`` and ``fastagent demo``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from fastagent import console
from fastagent.cli_common import AgentOpt, StoreOpt


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(demo)


def serve(
    host: Annotated[
        str,
        typer.Option(envvar="FASTAGENT_HOST", metavar="HOST", help="Interface to listen on"),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(envvar="FASTAGENT_PORT", min=0, max=65535, metavar="PORT", help="TCP port"),
    ] = 8080,
    store: StoreOpt = None,
    agent: AgentOpt = "default",
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Accept calls without a token (local use only)",
        ),
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="How long a dropped caller may resume the call "
            "\\[env var: FASTAGENT_GRACE_S] \\[default: 30]",
            show_default=False,
        ),
    ] = None,
    greet: Annotated[
        bool,
        typer.Option(help="The bot greets the caller first \\[env var: FASTAGENT_GREET]"),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            envvar="FASTAGENT_WORKERS",
            min=1,
            metavar="N",
            help="Processes sharing the port (one per core); calls move between them "
            "through the store like between instances",
        ),
    ] = 1,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="The voice model: a Realtime model (gpt-realtime-2) or GPT-Live "
            "(gpt-live-1.1) \\[env var: FASTAGENT_MODEL] \\[default: gpt-realtime-2]",
            show_default=False,
        ),
    ] = None,
    drain: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="On SIGTERM, how long running calls get to end before the rest are handed "
            "over to another instance \\[env var: FASTAGENT_DRAIN_S] \\[default: 25]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the voice service: the VAIC WebSocket at /audiocodes, /healthz, /readyz,
    /metrics and the call inspector at /inspect/.

    Needs FASTAGENT_VAIC_TOKEN (or --no-auth) and OPENAI_API_KEY.  SIGTERM drains.
    """
    from fastagent import lifecycle, observe
    from fastagent.agents import get_agent
    from fastagent.cli import clear_errors, fail
    from fastagent.service import ConfigError, Service, ServiceConfig, create_app, tune_gc
    from fastagent.sockets import CallerHttp, CallerProtocol

    with clear_errors():
        try:
            config = ServiceConfig.from_env(
                store=store, agent=agent, no_auth=no_auth or None, grace_s=grace, model=model
            )
            get_agent(config.agent)
            drain_s = lifecycle.drain_seconds(drain)
            observe.configure_logging()
            checked = Service(config)  # check tokens, store and master key before listening
            try:
                checked.store.keys.check()
            finally:
                checked.store.close()
        except (ConfigError, ValueError) as exc:
            raise fail(str(exc)) from None
    config.greet = config.greet and greet
    if not config.api_key and config.realtime_url is None:
        console.err(
            "fastagent: warning: no OPENAI_API_KEY set: calls will not reach the model "
            "(set it, or point FASTAGENT_REALTIME_URL at another Realtime server)"
        )
    settings: dict[str, Any] = dict(
        host=host,
        port=port,
        ws=CallerProtocol,  # uvicorn's websockets-sansio, with the audio fast lane
        http=CallerHttp,  # a request's headers within the initiate timeout (slowloris)
        timeout_keep_alive=config.initiate_timeout_s,
        loop="auto",  # uvloop when installed
        log_level="info",
        access_log=False,  # one line per VAIC connection adds nothing to the event log
        ws_max_size=config.max_frame_bytes * 2,
        # base64 audio barely compresses: deflate would only cost CPU per frame.
        ws_per_message_deflate=False,
    )
    if workers > 1:
        # Each worker process builds its own service from the environment.
        os.environ.update(config.to_env())
        os.environ["FASTAGENT_DRAIN_S"] = repr(drain_s)
        lifecycle.run("fastagent.service:app_from_env", settings, workers=workers, drain_s=drain_s)
        return
    app = create_app(config)
    tune_gc()
    lifecycle.run(app, settings, drain_s=drain_s)


def scenario_path(agent: str) -> Path:
    """The demo scenario of ``agent``: its ``scenario`` file name, looked up beside
    the agent's own module (agents given as ``module:ATTR``), else among the
    built-in scenarios; an absolute path is taken as it is."""
    from fastagent.agents import get_agent

    name = get_agent(agent).scenario or "default.json"
    path = Path(name)
    if path.is_absolute():
        return path
    if ":" in agent:
        module = sys.modules.get(agent.partition(":")[0])
        here = getattr(module, "__file__", None)
        if here and (Path(here).parent / name).is_file():
            return Path(here).parent / name
    return Path(str(resources.files("fastagent.examples") / "scenarios" / name))


@contextlib.asynccontextmanager
async def running_service(config: Any, store: Any = None) -> AsyncIterator[tuple[Any, str]]:
    """The service on an ephemeral loopback port: yields (app, ws url)."""
    import uvicorn

    from fastagent.service import create_app
    from fastagent.sockets import CallerHttp, CallerProtocol

    app = create_app(config, store)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            ws=CallerProtocol,
            http=CallerHttp,
            timeout_keep_alive=config.initiate_timeout_s,  # type: ignore[arg-type]
            log_level="warning",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("service did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, f"ws://127.0.0.1:{port}/audiocodes"
    finally:
        server.should_exit = True
        await task


class DemoPlan:
    """What a demo will play, resolved and checked before anything starts."""

    def __init__(
        self,
        agent: str | None,
        scenario_file: Path | None,
        store: str | None,
        model: str | None = None,
    ) -> None:
        from fastagent.agents import get_agent
        from fastagent.service import ServiceConfig
        from fastagent.testing.scenario import load_scenario

        if scenario_file is None:
            scenario_file = scenario_path(agent or "default")
        self.scenario_file = scenario_file
        self.scenario = load_scenario(scenario_file)
        # An explicit --agent wins; without one the scenario says whose it is.
        self.agent = agent or self.scenario.agent or "default"
        written_for = self.scenario.agent
        self.mismatch = written_for if agent and written_for not in ("", "default", agent) else ""
        # Unknown or unimportable: one line, before any socket.
        agent_name = get_agent(self.agent).name
        if written_for == agent_name:
            self.mismatch = ""
        # Every FASTAGENT_* setting is checked here, not inside the running service.
        # --model, else the scenario's model, else FASTAGENT_MODEL: a GPT-Live model
        # (gpt-live-1.1) plays against the fake GPT-Live server.
        self.config = ServiceConfig.from_env(
            store=store,
            agent=self.agent,
            no_auth=True,
            api_key="demo",
            model=model or self.scenario.model or None,
        )
        self.store = store


async def run_demo(
    agent: str | None,
    scenario_file: Path | None,
    store: str | None,
    *,
    realtime: bool = False,
    show: bool = True,
    plan: DemoPlan | None = None,
    model: str | None = None,
    problems: list[str] | None = None,
) -> str:
    """Play a scenario end to end over loopback; return the call id.

    ``agent`` None plays the scenario with the agent it names.  Scenario
    problems (a broken expectation, a caller error) go to ``problems`` when given,
    else to the log as warnings.  The store is
    opened (and every setting checked) before the service starts, so a bad
    setting is one line, not a failed server start-up.  ``model`` (else the
    scenario's, else ``FASTAGENT_MODEL``) picks the fake: a GPT-Live model plays
    against the fake GPT-Live server, any other against the fake Realtime server.
    """
    from fastagent.call_printer import CallPrinter
    from fastagent.live import is_live_model
    from fastagent.store import open_store
    from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
    from fastagent.testing.fake_live import FakeLiveServer
    from fastagent.testing.fake_realtime import FakeRealtimeServer

    plan = plan or DemoPlan(agent, scenario_file, store, model)
    scenario = plan.scenario
    config = plan.config
    config.token = None
    # The simulated caller plays bot audio on its own clock, faster than real time.
    config.playback_speed = 1.0 if realtime else 1 / DEFAULT_PACE
    switches = scenario.fake_model
    if switches.model_timeout_s is not None:
        config.model_timeout_s = switches.model_timeout_s
    if switches.unreachable:
        config.model_retries = 1
    event_store = open_store(config.store)
    try:
        options: dict[str, Any] = {"realtime": realtime}
        fake_cls: Any = FakeRealtimeServer
        if is_live_model(config.model):
            # GPT-Live speaks at the pace the caller hears (full duplex: it stops when
            # talked over), so its fake is paced like the simulated caller's playback.
            fake_cls, options["speed"] = FakeLiveServer, 1 / DEFAULT_PACE
        else:
            options.update(
                ignore=switches.ignore,
                error_on=switches.error_on,
                no_session_created=switches.no_session_created,
                expire_after_responses=switches.expire_after_responses,
                # a session that expires is followed by a new one, which goes on
                continue_script=switches.expire_after_responses is not None,
            )
        async with fake_cls(scenario, **options) as fake:
            # An unreachable model: a loopback port nobody listens on (found, then closed).
            config.realtime_url = fake.url if not switches.unreachable else await _dead_url()
            async with running_service(config, event_store) as (app, url):
                service = app.state.service
                caller = SimulatedCaller(url, formats=scenario.caller.formats, realtime=realtime)
                main = asyncio.current_task()

                async def hang_up() -> None:
                    with contextlib.suppress(Exception):
                        await caller.hang_up("the demo's output was closed")
                    for _ in range(500):  # the service records the end (ms; s under load)
                        if not service.calls:
                            break
                        await asyncio.sleep(0.01)
                    if main is not None:
                        main.cancel()

                # `| head`: the reader went away; the caller hangs up now (a
                # recorded end, not a dropped line the service would hold open).
                stop = console.on_close(lambda: _spawn(hang_up()))
                if show:
                    service.observers.append(_guarded(CallPrinter()))
                try:
                    async with console.watch_pipe():
                        report = await caller.play(scenario, timeout=120)
                finally:
                    stop()
                if console.closed():
                    raise console.PipeClosed
                # A scenario that no longer fits the agent must not pass silently.
                for problem in (*fake.violations, *fake.mismatches, *report.errors):
                    if problems is not None:
                        problems.append(problem)
                    else:
                        logging.getLogger("fastagent.demo").warning("scenario problem: %s", problem)
                for _ in range(500):  # let the service finish the call's log
                    if not service.calls:
                        break
                    await asyncio.sleep(0.01)
                return caller.conversation_id
    except asyncio.CancelledError:
        if console.closed():
            raise console.PipeClosed from None
        raise
    finally:
        event_store.close()


async def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"ws://127.0.0.1:{port}/v1"


_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)  # keep a reference until it is done
    task.add_done_callback(_background.discard)


def _guarded(printer: Any) -> Any:
    """An observer that never breaks the call it watches: a closed stdout stops the
    command (see :mod:`fastagent.console`), nothing else escapes into the service."""

    def observe(e: Any) -> None:
        if console.closed():
            return
        try:
            printer(e)
        except console.PipeClosed:
            pass

    return observe


def demo(
    agent: Annotated[
        str | None,
        typer.Option(
            metavar="NAME|MODULE:ATTR",
            help="The agent to call: a built-in one (see `fastagent fsa list`) or "
            "package.module:ATTRIBUTE  \\[default: the scenario's agent, else default]",
            show_default=False,
        ),
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A scenario JSON file (docs/scenarios.md) \\[default: the agent's own]",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    realtime: Annotated[
        bool,
        typer.Option(help="Pace audio in real time (default: 4x faster than real time)"),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="The voice model: a Realtime model (gpt-realtime-2) or GPT-Live "
            "(gpt-live-1.1)  \\[default: the scenario's, else $FASTAGENT_MODEL]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a complete simulated call over loopback and print its transcript."""
    from fastagent.cli import clear_errors, fail
    from fastagent.service import ConfigError
    from fastagent.testing.scenario import ScenarioError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with clear_errors():
        try:
            plan = DemoPlan(agent, scenario, store, model)
            _header(plan, realtime)
            call_id = asyncio.run(run_demo(None, None, store, realtime=realtime, plan=plan))
        except (ScenarioError, ConfigError) as exc:
            raise fail(str(exc)) from None
        _summary(call_id, store, realtime, plan.agent)


def _header(plan: DemoPlan, realtime: bool) -> None:
    from rich.text import Text

    console.out(
        Text.assemble(
            ("Demo call", "bold"),
            " with agent ",
            (plan.agent, "id"),
            f", scenario {plan.scenario.name}",
            (f"  (fake {plan.config.model}, simulated caller, loopback)", "note"),
        )
    )
    if plan.mismatch:
        console.out(
            Text(
                f"  note: the scenario was written for agent {plan.mismatch!r}; "
                f"playing it with {plan.agent!r} as you asked",
                style="cut",
            )
        )


def _summary(call_id: str, store: str | None, realtime: bool, agent: str = "") -> None:
    """Call id, outcome, duration, where it is stored, and what to run next."""
    from rich.text import Text

    from fastagent import events as ev
    from fastagent.store import open_store

    with open_store(store, create=False) as s:
        events = s.read_call(call_id)
        where = s.url
    ended = next((e for e in reversed(events) if isinstance(e, ev.CallEnded)), None)
    outcome = (ended.outcome or "ended") if ended else "still open"
    seconds = (events[-1].at - events[0].at) / 1e6 if events else 0.0
    audio_s = sum(e.duration_us for e in events if isinstance(e, ev.CallerAudio)) / 1e6
    flag = "" if store is None else f" --store {store}"
    console.out("")
    console.out(Text.assemble(("call id:   ", "note"), (call_id, "id")))
    console.out(
        Text.assemble(
            ("outcome:   ", "note"), (outcome, "ok" if outcome == "completed" else "fail")
        )
    )
    pace = (
        ""
        if realtime
        else (
            f"  (the simulated caller plays audio 4x faster than real time: "
            f"{audio_s:.1f} s of caller audio)"
        )
    )
    console.out(Text.assemble(("duration:  ", "note"), f"{seconds:.1f} s", (pace, "note")))
    console.out(Text.assemble(("stored in: ", "note"), where))
    console.out("")
    console.out(Text("next:", style="bold"))
    for cmd, what in (
        # Replay never imports code a recording names: an agent by import path is given.
        (
            f"fastagent replay {call_id}{flag}" + (f" --agent {agent}" if ":" in agent else ""),
            "its timeline, replayed through today's code",
        ),
        (f"fastagent calls{flag}", "every recorded call"),
        (f"fastagent report{flag}", "outcomes, FSA funnel, tools, latency"),
        (f"fastagent inspect{flag}", "the call in your browser"),
    ):
        if cmd.split()[1] not in _commands():
            continue
        console.out(Text.assemble("  ", (cmd, "cmd"), ("   # " + what, "note")))


def _commands() -> set[str]:
    """The names of the commands this build of ``fastagent`` has."""
    from fastagent.cli import app

    return {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
