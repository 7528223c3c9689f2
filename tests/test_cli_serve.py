"""``fastagent serve`` / ``demo`` configuration, and user agents by import path.

``serve`` is stopped before uvicorn starts: ``lifecycle.run`` is replaced by a
recorder, so these tests check what would be served without listening.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastagent import lifecycle, service
from fastagent.agent import Agent
from fastagent.agents import UnknownAgent, get_agent
from fastagent.cli import app
from fastagent.service import ConfigError, ServiceConfig
from fastagent.sockets import CallerProtocol

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FASTAGENT_* setting of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("FASTAGENT_"):
            monkeypatch.delenv(key)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What serve would run: the config it builds the app from, uvicorn's host/port."""
    seen: dict[str, Any] = {}
    real_create_app = service.create_app

    def create_app(config: ServiceConfig, store: Any = None) -> Any:
        seen["config"] = config
        return real_create_app(config, store)

    def run(app: Any, settings: dict[str, Any], *, workers: int = 1, drain_s: float) -> None:
        seen.update(settings, ran=True, workers=workers, drain_s=drain_s)

    monkeypatch.setattr(service, "create_app", create_app)
    monkeypatch.setattr(lifecycle, "run", run)
    # The real one freezes every object of this test process out of collection.
    monkeypatch.setattr(service, "tune_gc", lambda: seen.update(gc_tuned=True))
    yield seen


def _one_line_error(result: Any, needle: str) -> None:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in result.output, result.output
    assert needle in err, err


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    store = str(tmp_path / "calls.db")
    return runner.invoke(app, ["serve", "--no-auth", "--store", store, *args], env=env)


# ------------------------------------------------------------------ bad numbers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FASTAGENT_GRACE_S", "abc"),
        ("FASTAGENT_GRACE_S", "-1"),
        ("FASTAGENT_GRACE_S", "nan"),
        ("FASTAGENT_PLAYBACK_SPEED", "abc"),
        ("FASTAGENT_PLAYBACK_SPEED", "0"),
        ("FASTAGENT_MAX_FRAME_BYTES", "abc"),
        ("FASTAGENT_MAX_FRAME_BYTES", "1.5"),
        ("FASTAGENT_MAX_FRAME_BYTES", "0"),
    ],
)
def test_bad_number_in_environment(
    tmp_path: Path, served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_env()
    assert str(info.value).startswith(f"bad {name}={value!r}: expected ")
    _one_line_error(_serve(tmp_path), f"{name}={value!r}")
    assert "ran" not in served  # stopped before uvicorn started
    demo = runner.invoke(app, ["demo", "--store", str(tmp_path / "demo.db")])
    _one_line_error(demo, f"{name}={value!r}")


def test_numbers_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAGENT_GRACE_S", " 2.5 ")
    monkeypatch.setenv("FASTAGENT_PLAYBACK_SPEED", "4")
    monkeypatch.setenv("FASTAGENT_MAX_FRAME_BYTES", "65536")
    cfg = ServiceConfig.from_env()
    assert (cfg.grace_s, cfg.playback_speed, cfg.max_frame_bytes) == (2.5, 4.0, 65536)
    assert ServiceConfig.from_env(grace_s=None).grace_s == 2.5  # None overrides nothing
    assert ServiceConfig.from_env(grace_s=1.0).grace_s == 1.0


# ------------------------------------------------------------------ serve options


@pytest.mark.parametrize(
    ("env", "args", "grace"),
    [
        ({}, [], None),  # the core decides (core.POLICY), recorded per call
        ({"FASTAGENT_GRACE_S": "7"}, [], 7.0),
        ({"FASTAGENT_GRACE_S": "7"}, ["--grace", "3"], 3.0),
        ({}, ["--grace", "0"], 0.0),
    ],
)
def test_serve_grace_from_option_else_environment(
    tmp_path: Path,
    served: dict[str, Any],
    env: dict[str, str],
    args: list[str],
    grace: float | None,
) -> None:
    result = _serve(tmp_path, *args, env=env)
    assert result.exit_code == 0, result.output
    assert served["config"].grace_s == grace


def test_serve_host_and_port_from_environment(tmp_path: Path, served: dict[str, Any]) -> None:
    result = _serve(tmp_path)
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8080)
    env = {"FASTAGENT_HOST": "0.0.0.0", "FASTAGENT_PORT": "9123"}
    result = _serve(tmp_path, env=env)
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("0.0.0.0", 9123)
    result = _serve(tmp_path, "--port", "9200", env=env)
    assert result.exit_code == 0 and served["port"] == 9200  # the option wins
    # The audio fast lane's uvicorn protocol, and the collector tuned for tail latency.
    assert served["ws"] is CallerProtocol and served["gc_tuned"]


# ------------------------------------------------------------------ agents by import path


def _agent_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """A module under tmp_path on sys.path; returns its (unique) name."""
    name = f"my_agents_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


TINY = """
from fastagent.agent import Agent

AGENT = Agent(name="tiny", instructions="You are a tiny test agent. Keep it short.")
NOT_AN_AGENT = {"name": "tiny"}
"""


def test_get_agent_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _agent_module(tmp_path, monkeypatch, TINY)
    agent = get_agent(f"{mod}:AGENT")
    assert isinstance(agent, Agent) and agent.name == "tiny"
    assert get_agent(f"{mod}:AGENT") is agent
    cases = {
        f"{mod}:NOT_AN_AGENT": f"{mod}:NOT_AN_AGENT is a dict, not a fastagent Agent",
        f"{mod}:MISSING": f"agent module {mod!r} has no attribute 'MISSING'",
        "no_such_pkg.agents:AGENT": (
            "cannot import agent module 'no_such_pkg.agents': "
            "ModuleNotFoundError: No module named 'no_such_pkg'"
        ),
        f"{mod}:": f"bad agent '{mod}:': expected package.module:ATTRIBUTE",
        ":AGENT": "bad agent ':AGENT': expected package.module:ATTRIBUTE",
    }
    for name, message in cases.items():
        with pytest.raises(UnknownAgent) as info:
            get_agent(name)
        assert str(info.value) == message


def test_agent_module_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _agent_module(tmp_path, monkeypatch, "raise RuntimeError('backend not configured')\n")
    with pytest.raises(UnknownAgent, match="RuntimeError: backend not configured"):
        get_agent(f"{mod}:AGENT")


def test_serve_with_agent_by_import_path(
    tmp_path: Path, served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _agent_module(tmp_path, monkeypatch, TINY)
    result = _serve(tmp_path, "--agent", f"{mod}:AGENT")
    assert result.exit_code == 0, result.output
    assert served["config"].agent == f"{mod}:AGENT"
    _one_line_error(_serve(tmp_path, "--agent", "no_such_pkg.x:AGENT"), "cannot import")
    _one_line_error(_serve(tmp_path, "--agent", f"{mod}:NOT_AN_AGENT"), "not a fastagent Agent")
    assert served.get("port") == 8080  # only the good one reached uvicorn


def test_demo_and_replay_with_agent_by_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _agent_module(tmp_path, monkeypatch, TINY)
    store = str(tmp_path / "demo.db")
    demo = runner.invoke(app, ["demo", "--agent", f"{mod}:AGENT", "--store", store])
    assert demo.exit_code == 0, demo.output
    assert f"with agent {mod}:AGENT," in demo.output
    call_id = demo.output.split("call id: ")[1].split()[0]
    from fastagent.store import open_store

    with open_store(store) as s:
        first = s.read_call(call_id)[0]
    assert first.config.agent == f"{mod}:AGENT"  # type: ignore[attr-defined]
    # Replay never imports code a recording names: the agent comes from the command line.
    _one_line_error(
        runner.invoke(app, ["replay", call_id, "--store", store]), f"--agent {mod}:AGENT"
    )
    assert f"--agent {mod}:AGENT" in demo.output  # the demo's replay hint says so
    replayed = runner.invoke(app, ["replay", call_id, "--store", store, "--agent", f"{mod}:AGENT"])
    assert replayed.exit_code == 0, replayed.output
    assert "identical:" in replayed.output


def test_worker_processes_rebuild_the_same_config_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastagent.service import ServiceConfig

    cfg = ServiceConfig(
        store="/tmp/x.db",
        agent="banking",
        no_auth=True,
        grace_s=12.5,
        greet=False,
        playback_speed=4.0,
        transfer_target="tel:+1555",
        model="gpt-realtime-mini",
    )
    for key, value in cfg.to_env().items():
        monkeypatch.setenv(key, value)
    back = ServiceConfig.from_env(no_auth=True)
    for name in (
        "store",
        "agent",
        "grace_s",
        "greet",
        "playback_speed",
        "transfer_target",
        "model",
        "max_frame_bytes",
        "no_auth",
    ):
        assert getattr(back, name) == getattr(cfg, name), name


def test_tune_gc_freezes_start_up_objects_and_spaces_full_collections() -> None:
    code = (
        "import gc; from fastagent.service import tune_gc; tune_gc(); "
        "print(gc.get_freeze_count() > 1000, gc.get_threshold()[2])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "100"]
