"""``fastagent serve`` and ``fastagent demo``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from fastagent import events as ev

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="FASTAGENT_STORE", help="SQLite path or postgresql:// URL"),
]


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(demo)


def serve(
    host: Annotated[
        str, typer.Option(envvar="FASTAGENT_HOST", help="Interface to listen on")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="FASTAGENT_PORT", min=0, max=65535, help="TCP port")
    ] = 8080,
    store: StoreOpt = None,
    agent: Annotated[
        str, typer.Option(envvar="FASTAGENT_AGENT", help="Agent name or module:ATTRIBUTE")
    ] = "default",
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept calls without a token")
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            min=0, help="Seconds a dropped caller may resume [default: $FASTAGENT_GRACE_S or 30]"
        ),
    ] = None,
    greet: Annotated[bool, typer.Option(help="The bot greets the caller first")] = True,
    workers: Annotated[
        int,
        typer.Option(
            envvar="FASTAGENT_WORKERS",
            min=1,
            help="Processes sharing the port (one per core); calls move between them "
            "through the store like between instances",
        ),
    ] = 1,
) -> None:
    """Run the voice service: VAIC WebSocket at /audiocodes."""
    import uvicorn

    from fastagent.agents import get_agent
    from fastagent.cli import clear_errors, fail
    from fastagent.service import ConfigError, Service, ServiceConfig, create_app, tune_gc
    from fastagent.sockets import CallerProtocol

    with clear_errors():
        try:
            config = ServiceConfig.from_env(
                store=store, agent=agent, no_auth=no_auth or None, grace_s=grace
            )
            get_agent(config.agent)
            Service(config).store.close()  # check token and store before listening
        except ConfigError as exc:
            raise fail(str(exc)) from None
    config.greet = config.greet and greet
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings: dict[str, Any] = dict(
        host=host,
        port=port,
        ws=CallerProtocol,  # uvicorn's websockets-sansio, with the audio fast lane
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
        uvicorn.run("fastagent.service:app_from_env", factory=True, workers=workers, **settings)
        return
    app = create_app(config)
    tune_gc()
    uvicorn.run(app, **settings)


def scenario_path(agent: str) -> Path:
    from fastagent.agents import get_agent

    name = get_agent(agent).scenario or "default.json"
    return Path(str(resources.files("fastagent") / "scenarios" / name))


@contextlib.asynccontextmanager
async def running_service(config: Any, store: Any = None) -> AsyncIterator[tuple[Any, str]]:
    """The service on an ephemeral loopback port: yields (app, ws url)."""
    import uvicorn

    from fastagent.service import create_app
    from fastagent.sockets import CallerProtocol

    app = create_app(config, store)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            ws=CallerProtocol,
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


async def run_demo(
    agent: str,
    scenario_file: Path | None,
    store: str | None,
    *,
    realtime: bool = False,
    show: bool = True,
    model: str | None = None,
) -> str:
    """Play a scenario end to end over loopback; return the call id.

    ``model`` (else ``FASTAGENT_MODEL``) picks the fake: a GPT-Live model
    (``gpt-live-1.1``) plays against the fake GPT-Live server, any other against
    the fake Realtime server.
    """
    from fastagent.live import is_live_model
    from fastagent.service import ServiceConfig
    from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
    from fastagent.testing.fake_live import FakeLiveServer
    from fastagent.testing.fake_realtime import FakeRealtimeServer
    from fastagent.testing.scenario import load_scenario

    scenario = load_scenario(scenario_file or scenario_path(agent))
    agent = scenario.agent if scenario.agent != "default" else agent
    model = model or scenario.model or None
    probe = ServiceConfig.from_env(model=model)
    options: dict[str, Any] = {"realtime": realtime}
    fake_cls: Any = FakeRealtimeServer
    if is_live_model(probe.model):
        # GPT-Live speaks at the pace the caller hears (full duplex: it stops when
        # talked over), so its fake is paced like the simulated caller's playback.
        fake_cls, options["speed"] = FakeLiveServer, 1 / DEFAULT_PACE
    async with fake_cls(scenario, **options) as fake:
        config = ServiceConfig.from_env(
            store=store,
            agent=agent,
            no_auth=True,
            realtime_url=fake.url,
            api_key="demo",
            model=model,
        )
        config.token = None
        # The simulated caller plays bot audio on its own clock, faster than real time.
        config.playback_speed = 1.0 if realtime else 1 / DEFAULT_PACE
        async with running_service(config) as (app, url):
            service = app.state.service
            if show:
                service.observers.append(_printer())
            caller = SimulatedCaller(url, formats=scenario.caller.formats, realtime=realtime)
            report = await caller.play(scenario, timeout=120)
            # A scenario that no longer fits the agent must not pass silently.
            for problem in (*fake.violations, *fake.mismatches, *report.errors):
                logging.getLogger("fastagent.demo").warning("scenario problem: %s", problem)
            for _ in range(500):  # let the service finish the call's log
                if not service.calls:
                    break
                await asyncio.sleep(0.01)
            return caller.conversation_id


def _printer() -> Any:
    from projections.trail import describe

    shown = (
        ev.Transcript,
        ev.FsaStarted,
        ev.FsaTransition,
        ev.FsaFinished,
        ev.FunctionCallDispatched,
        ev.ToolResult,
        ev.TruncateRequested,
        ev.Dtmf,
        ev.HangupRequested,
        ev.TransferRequested,
        ev.CallEnded,
        ev.SessionRejected,
    )

    def show(e: ev.Event) -> None:
        if isinstance(e, shown):
            text = describe(e)
            if text:
                typer.echo(f"  {text}")

    return show


def demo(
    agent: Annotated[str, typer.Option(help="Agent name or module:ATTRIBUTE")] = "default",
    scenario: Annotated[Path | None, typer.Option(help="A scenario JSON file")] = None,
    store: StoreOpt = None,
    realtime: Annotated[bool, typer.Option(help="Pace audio in real time")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            envvar="FASTAGENT_MODEL",
            help="Voice model: a Realtime model (gpt-realtime-2) or GPT-Live (gpt-live-1.1)",
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
            which = f"fake {model}" if model else "fake model"
            typer.echo(f"demo call with agent {agent!r} ({which}, simulated caller, loopback)")
            call_id = asyncio.run(run_demo(agent, scenario, store, realtime=realtime, model=model))
        except (ScenarioError, ConfigError) as exc:
            raise fail(str(exc)) from None
    where = f" --store {store}" if store else ""
    typer.echo(f"call id: {call_id}")
    typer.echo(f"replay it:  fastagent replay {call_id}{where}")
    sys.stdout.flush()
