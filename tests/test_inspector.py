"""The call inspector over real loopback HTTP, and in headless chromium.

A store is filled from the recordings in replays/ (real calls of the example
agents) plus a failed call with model errors; the inspector is served by uvicorn
on 127.0.0.1.  Browser tests keep screenshots in the test artefacts folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from fastagent import events as ev
from fastagent.access import ReadAccess
from fastagent.inspector import local_app
from fastagent.replay import read_recording
from fastagent.store import open_store
from projections import inspect as views
from projections import latency

REPLAYS = Path(__file__).parent.parent / "replays"


def _call_id(name: str) -> str:
    """The call id of a recording (a re-recording gives the call a new id)."""
    first = (REPLAYS / f"{name}.jsonl").read_text().splitlines()[0]
    return str(json.loads(first)["call_id"])


BANKING = _call_id("banking")
BARGE = _call_id("banking-barge-in")
HEALTH = _call_id("healthcare")
FAILED = "failed-call-0001"
LIVE = "live-call-0001"


def failed_call() -> list[ev.Event]:
    """A call whose model failed: a model error, a protocol violation, outcome failed."""
    t0 = 1_700_000_000_000_000
    c = FAILED
    return [
        ev.SessionInitiated(
            call_id=c, seq=1, at=t0, config=ev.CallConfig(agent="default"), caller="+4930123456"
        ),
        ev.SessionAccepted(
            call_id=c, seq=2, at=t0 + 1000, media_format="raw/mulaw", model_format="audio/pcmu"
        ),
        ev.Dtmf(call_id=c, seq=3, at=t0 + 200_000, digits="4711"),
        ev.ModelError(
            call_id=c,
            seq=4,
            at=t0 + 400_000,
            error_type="server_error",
            code="overloaded",
            message="The server is overloaded",
        ),
        ev.ProtocolError(call_id=c, seq=5, at=t0 + 500_000, side="caller", message="bad frame"),
        ev.CallEnded(call_id=c, seq=6, at=t0 + 900_000, reason="model failed", outcome="failed"),
    ]


def fill(store: Any) -> dict[str, list[ev.Event]]:
    calls = {}
    for name in ("banking", "banking-barge-in", "healthcare"):
        evs = read_recording(REPLAYS / f"{name}.jsonl")
        store.append(evs)
        calls[evs[0].call_id] = evs
    store.append(failed_call())
    calls[FAILED] = failed_call()
    store.flush()
    return calls


class Served:
    """The inspector on 127.0.0.1 with a fresh read credential (sent by :meth:`get`)."""

    def __init__(self, store: Any, readers: ReadAccess | None = None) -> None:
        if readers is None:
            readers, self.token = ReadAccess.ephemeral("test")
        app = local_app(store, readers)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        if headers is None:
            headers = {"Authorization": f"Bearer {self.token}"}
        req = urllib.request.Request(self.base + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                status = r.status
                ctype = r.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            body, status, ctype = exc.read(), exc.code, exc.headers.get("content-type", "")
        return status, json.loads(body) if "json" in ctype else body.decode()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    s = open_store(str(tmp_path_factory.mktemp("inspect") / "calls.db"))
    fill(s)
    yield s
    s.close()


@pytest.fixture(scope="module")
def served(store: Any) -> Iterator[Served]:
    srv = Served(store)
    yield srv
    srv.stop()


# ------------------------------------------------------------------ read models


def test_turn_stages_split_a_turn_at_every_point_the_log_sees() -> None:
    evs = read_recording(REPLAYS / "banking.jsonl")
    turns = latency.turn_stages(evs)
    assert turns, "the banking call has caller turns"
    answered = [t for t in turns if t.first_chunk_at is not None]
    assert answered
    for t in answered:
        assert t.end_of_speech_at is not None
        assert t.end_of_speech_at <= t.speech_stopped_at <= t.response_created_at  # type: ignore[operator]
        assert t.response_created_at <= t.first_audio_at <= t.first_chunk_at  # type: ignore[operator]
        stages = t.stage_ms()
        parts = sum(stages[k] or 0 for k in ("vad", "response", "first_audio", "to_caller"))
        assert stages["total"] == pytest.approx(parts, abs=0.01)
    pct = latency.stage_percentiles(turns)
    assert pct["total"]["n"] == len(answered)
    assert pct["total"]["p50"] <= pct["total"]["p95"]


def test_end_of_speech_is_placed_on_the_caller_audio_clock() -> None:
    at0 = 1_000_000
    c = "x"
    evs: list[ev.Event] = [
        ev.ModelConfigured(call_id=c, seq=1, at=at0, instructions=""),
    ]
    for i in range(10):  # 20 ms chunks arriving every 20 ms
        evs.append(
            ev.CallerAudio(
                call_id=c,
                seq=2 + i,
                at=at0 + 20_000 * (i + 1),
                chunk=i + 1,
                nbytes=160,
                duration_us=20_000,
                fmt="raw/mulaw",
            )
        )
    evs.append(ev.SpeechStopped(call_id=c, seq=12, at=at0 + 700_000, audio_end_ms=90))
    evs.append(ev.ResponseStarted(call_id=c, seq=13, at=at0 + 710_000, response_id="r1"))
    (turn,) = latency.turn_stages(evs)
    # 90 ms of audio ends in the 5th chunk (80..100 ms), which arrived at +100 ms.
    assert turn.end_of_speech_at == at0 + 100_000
    assert turn.stage_ms()["vad"] == 600.0
    assert turn.stage_ms()["response"] == 10.0
    assert turn.stage_ms()["total"] is None  # never answered


def test_cost_prices_audio_text_and_cached_tokens() -> None:
    prices = latency.Prices.parse("audio_in=10,audio_out=20,text_in=1,text_out=2,cached_in=0.5")
    usage = ev.Usage(
        input_tokens=1000,
        input_audio_tokens=600,
        cached_tokens=100,
        output_tokens=500,
        output_audio_tokens=400,
    )
    cost = latency.usage_cost(usage, prices)
    assert (cost.audio_in, cost.text_in, cost.cached_in) == (500, 400, 100)
    assert (cost.audio_out, cost.text_out) == (400, 100)
    assert cost.usd == pytest.approx((500 * 10 + 400 * 1 + 100 * 0.5 + 400 * 20 + 100 * 2) / 1e6)
    with pytest.raises(ValueError, match="bad price 'audio=3'"):
        latency.Prices.parse("audio=3")
    with pytest.raises(ValueError, match="not a number"):
        latency.Prices.parse("audio_in=x")


def test_views_mask_personal_data() -> None:
    evs = failed_call()
    row = views.call_summary(evs)
    assert row["caller"] == "***"
    view = views.call_view(evs)
    text = json.dumps(view, ensure_ascii=False)
    assert "4930123456" not in text and "4711" not in text
    assert "caller pressed ***" in text
    assert [e["kind"] for e in view["errors"]] == ["server_error", "caller"]


def test_state_at_is_the_live_fold_up_to_an_event() -> None:
    evs = read_recording(REPLAYS / "banking.jsonl")
    started = next(e for e in evs if isinstance(e, ev.FsaStarted))
    st = views.state_at(evs, started.seq)
    assert st["last_seq"] == started.seq
    assert st["fsas"] == {started.fsa: {"state": started.state, "slots": {}}}
    end = views.state_at(evs, evs[-1].seq)
    assert end["status"] == "ended" and end["fsas"] == {}


# -------------------------------------------------------------------- HTTP API


def test_calls_list_filters_and_search(served: Served) -> None:
    status, body = served.get("/inspect/api/calls")
    assert status == 200
    ids = [c["call_id"] for c in body["calls"]]
    assert set(ids) == {BANKING, BARGE, HEALTH, FAILED}
    assert body["agents"] == ["banking", "default", "healthcare"]
    by_agent = {a["agent"]: a for a in body["by_agent"]}
    assert by_agent["banking"]["calls"] == 2 and by_agent["default"]["turns"] == 0
    assert by_agent["banking"]["p50_ms"] <= by_agent["banking"]["p95_ms"]
    assert "failed" in body["outcomes"]

    def ids_for(qs: str) -> set[str]:
        status, body = served.get("/inspect/api/calls?" + qs)
        assert status == 200, body
        return {c["call_id"] for c in body["calls"]}

    assert ids_for("agent=banking") == {BANKING, BARGE}
    assert ids_for("outcome=failed") == {FAILED}
    assert ids_for("q=" + BARGE[:8]) == {BARGE}
    assert ids_for("caller=%2B15550110") == {HEALTH}
    assert ids_for("fsa_state=card_replacement:done") == {BANKING, BARGE} & ids_for(
        "fsa_state=done"
    )
    assert ids_for("max_s=2") == {FAILED}
    assert ids_for("min_s=2") == {BANKING, BARGE, HEALTH}
    assert ids_for("since=2099-01-01") == set()
    assert ids_for("until=2099-01-01") == {BANKING, BARGE, HEALTH, FAILED}
    status, body = served.get("/inspect/api/calls?since=yesterday")
    assert status == 400 and "bad since" in body["error"]
    # No caller number leaves unmasked.
    _, raw = served.get("/inspect/api/calls")
    assert "15550110" not in json.dumps(raw)


def test_call_view_and_state_over_http(served: Served) -> None:
    status, view = served.get(f"/inspect/api/calls/{BARGE}")
    assert status == 200
    assert view["agent"] == "banking" and view["outcome"]
    assert view["barge_ins"], "the barge-in recording has barge-ins"
    assert any(b["cut"] for b in view["bot_speech"])
    assert view["diagrams"][0]["name"] == "card_replacement"
    assert not view["diagrams"][0].get("from_log")
    assert view["latency"]["total"]["n"] > 0
    assert view["cost"]["usd"] > 0
    seq = view["transitions"][1]["seq"]
    status, st = served.get(f"/inspect/api/calls/{BARGE}/state?seq={seq}")
    assert status == 200 and st["last_seq"] == seq
    assert st["fsas"]["card_replacement"]["state"] == view["transitions"][1]["target"]
    assert served.get(f"/inspect/api/calls/{BARGE}/state?seq=x")[0] == 400
    status, body = served.get("/inspect/api/calls/nope")
    assert status == 404 and "no call 'nope'" in body["error"]


def test_page_and_assets_come_from_fastagent_only(served: Served) -> None:
    status, html = served.get("/inspect/")
    assert status == 200
    assert "static/app.js" in html and "static/style.css" in html
    for text in (html, served.get("/inspect/static/app.js")[1]):
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
    assert served.get("/inspect/static/../__init__.py")[0] == 404
    assert served.get("/inspect/static/secret.txt")[0] == 404


def test_read_credential_guard(store: Any) -> None:
    readers = ReadAccess.parse("alice:a-long-read-token-1234")
    srv = Served(store, readers)
    try:
        bearer = {"Authorization": "Bearer a-long-read-token-1234"}
        status, body = srv.get("/inspect/api/calls", {})
        assert status == 401 and body["error"] == "read credential required"
        assert srv.get("/inspect/api/calls", {"Authorization": "Bearer wrong"})[0] == 401
        assert srv.get(f"/inspect/api/calls/{BANKING}", {})[0] == 401
        assert srv.get(f"/inspect/api/calls/{BANKING}/live", {})[0] == 401
        assert srv.get("/inspect/api/calls", bearer)[0] == 200
        # The page itself holds no call data.
        assert srv.get("/inspect/", {})[0] == 200
        # A typed token becomes an HttpOnly, SameSite=Strict cookie.
        req = urllib.request.Request(
            srv.base + "/inspect/login", data=b'{"token": "wrong"}', method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 401
        req = urllib.request.Request(
            srv.base + "/inspect/login", data=b'{"token": "a-long-read-token-1234"}', method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 204
            cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        value = cookie.split(";")[0]
        assert srv.get("/inspect/api/calls", {"Cookie": value})[0] == 200
    finally:
        srv.stop()
    # No credential configured: reading is off, not open.
    srv = Served(store, ReadAccess())
    try:
        status, body = srv.get("/inspect/api/calls", {})
        assert status == 404 and "FASTAGENT_READ_TOKEN" in body["error"]
    finally:
        srv.stop()


def test_live_view_streams_server_sent_events(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "live.db"))
    evs = read_recording(REPLAYS / "healthcare.jsonl")
    half = len(evs) // 2
    s.append(evs[:half])
    s.flush()
    srv = Served(s)
    call_id = evs[0].call_id
    try:
        got: list[str] = []

        def read() -> None:
            req = urllib.request.Request(
                srv.base + f"/inspect/api/calls/{call_id}/live",
                headers={"Authorization": f"Bearer {srv.token}"},
            )
            with urllib.request.urlopen(req, timeout=20) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r:
                    got.append(line.decode().rstrip("\n"))
                    if line.startswith(b"event: end"):
                        return

        reader = threading.Thread(target=read)
        reader.start()
        for _ in range(200):
            if any(x.startswith("data:") for x in got):
                break
            time.sleep(0.02)
        s.append(evs[half:])
        s.flush()
        reader.join(timeout=20)
        assert not reader.is_alive()
        data = [json.loads(x[5:]) for x in got if x.startswith("data:")]
        assert data[0]["last_seq"] == evs[half - 1].seq and data[0]["status"] == "live"
        assert any(d.get("status") == "ended" for d in data)
        assert "event: end" in got
    finally:
        srv.stop()
        s.close()


def test_inspect_command_refuses_a_missing_store(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fastagent.cli import main; main()",
            "inspect",
            "--store",
            str(tmp_path / "nope.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("fastagent: no store at")
    assert "Traceback" not in out.stderr


def test_inspect_command_serves_on_loopback(store: Any) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from fastagent.cli import main; main()",
            "inspect",
            "--store",
            store.url,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("call inspector on http://127.0.0.1:"), line
        url, _, token = line.split()[3].partition("#token=")
        assert len(token) > 20
        req = urllib.request.Request(url + "api/calls")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=10)
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert {c["call_id"] for c in json.load(r)["calls"]} >= {BANKING, FAILED}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_mounts_the_inspector_behind_the_read_credential(store: Any) -> None:
    from fastagent.service import ServiceConfig, create_app

    config = ServiceConfig(no_auth=True, read_token="a-long-read-token-5678", store=store.url)
    app = create_app(config, store)

    async def run() -> None:
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.get("/inspect")
                assert r.status_code == 308 and r.headers["location"].endswith("/inspect/")
                assert (await client.get("/inspect/")).status_code == 200
                assert (await client.get("/inspect/api/calls")).status_code == 401
                r = await client.get(
                    "/inspect/api/calls",
                    headers={"Authorization": "Bearer a-long-read-token-5678"},
                )
                assert r.status_code == 200
                assert {c["call_id"] for c in r.json()["calls"]} >= {BANKING, FAILED}

    import asyncio

    asyncio.run(run())


def test_report_has_turn_stages_and_cost_per_agent_and_call(store: Any) -> None:
    from fastagent.analytics_cli import turn_sections

    (agents_title, agents), (calls_title, calls) = turn_sections(store.url)
    assert "end of speech" in agents_title and "per call" in calls_title
    rows = agents.to_pylist()
    banking = {r["stage"]: r for r in rows if r["agent"] == "banking"}
    assert set(banking) == set(latency.STAGES)
    assert banking["total"]["calls"] == 2 and banking["total"]["cost_usd"] > 0
    assert banking["total"]["p50_ms"] <= banking["total"]["p95_ms"]
    per_call = {r["call_id"]: r for r in calls.to_pylist()}
    assert set(per_call) == {BANKING, BARGE, HEALTH, FAILED}
    expected = latency.stage_percentiles(
        latency.turn_stages(read_recording(REPLAYS / "banking.jsonl"))
    )["total"]
    assert (per_call[BANKING]["p50_ms"], per_call[BANKING]["p95_ms"]) == (
        expected["p50"],
        expected["p95"],
    )
    assert per_call[FAILED]["turns"] == 0


# --------------------------------------------------------------------- browser


def test_browser_calls_list_filter_and_open_a_call(
    browser: Any, served: Served, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # (401s before signing in are expected: the browser logs them.)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(served.base + "/inspect/")
    page.wait_for_selector("#login")  # no credential yet
    page.fill("#token", "not-it")
    page.click("#login button")
    expect(page.locator("#login-error")).to_be_visible()
    page.fill("#token", served.token)
    page.click("#login button")
    page.wait_for_selector("#calls")
    errors = [e for e in errors if "401 (Unauthorized)" not in e]
    assert page.locator("#calls tbody tr").count() == 4
    assert "banking" in page.locator("#by-agent").inner_text()
    page.screenshot(path=str(artifacts / "inspector-list.png"), full_page=True)
    page.select_option("#f-agent", "banking")
    page.click("#filters button[type=submit]")
    expect(page.locator("#calls tbody tr")).to_have_count(2)
    page.fill("#f-q", BARGE[:8])
    page.click("#filters button[type=submit]")
    expect(page.locator("#calls tbody tr")).to_have_count(1)
    assert "+15550103" not in page.content()
    page.click("a.call-link")
    page.wait_for_selector("#state-facts")
    assert page.locator("#call-id").inner_text() == BARGE
    # The time axis: caller and bot speech bars, a cut bot bar, barge-in marks.
    assert page.locator("#timeline-svg rect.bar.caller").count() > 0
    assert page.locator("#timeline-svg rect.bar.bot.cut").count() > 0
    assert page.locator("#timeline-svg .mark.barge").count() > 0
    assert page.locator("#timeline-svg rect.bar.tool").count() > 0
    # Transcript, tools with arguments and results, latency, the state diagram.
    assert page.locator("#transcript li.user").count() > 0
    assert page.locator("#tools tbody tr").count() > 0
    assert "find_customer" in page.locator("#tools").inner_text()
    assert "end of speech" in page.locator("#latency").inner_text()
    current = page.locator("#diagrams g.node.current")
    assert current.count() == 1
    assert page.locator("#diagrams path.edge.walked").count() > 0
    page.screenshot(path=str(artifacts / "inspector-call-end.png"), full_page=True)
    assert not errors


def test_browser_scrubber_shows_the_state_at_an_event(
    browser: Any, served: Served, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(served.base + f"/inspect/#token={served.token}")
    page.wait_for_selector("#calls")
    page.goto(served.base + f"/inspect/#/call/{BANKING}")
    page.wait_for_selector("#state-facts")
    assert page.locator("#state-status").inner_text() == "ended"
    # Click the FSA's second transition in its log: time travel to that event.
    page.locator("#fsa-log li").nth(1).click()
    expect(page.locator("#state-status")).to_have_text("active")
    state = page.locator("#state-fsas .current-state").inner_text()
    highlighted = page.locator("#diagrams g.node.current").get_attribute("data-state")
    assert state == highlighted != "done"
    page.screenshot(path=str(artifacts / "inspector-call-scrubbed.png"), full_page=True)
    # The scrubber's first event: nothing has happened yet.
    page.locator("#scrubber").fill("0")
    expect(page.locator("#state-seq")).to_have_text("#1")
    assert page.locator("#state-fsas").inner_text().startswith("no FSA running")


def test_browser_shows_model_errors(browser: Any, served: Served, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(served.base + f"/inspect/#token={served.token}")
    page.wait_for_selector("#calls")
    page.goto(served.base + f"/inspect/#/call/{FAILED}")
    page.wait_for_selector("#errors li")
    text = page.locator("#errors").inner_text()
    assert "ModelError (server_error overloaded)" in text
    assert "ProtocolError (caller)" in text
    assert page.locator("#timeline-svg .mark.err").count() == 2
    assert "4711" not in page.content() and "4930123456" not in page.content()
    page.screenshot(path=str(artifacts / "inspector-call-errors.png"), full_page=True)


def test_browser_live_view_follows_a_running_call(
    browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    s = open_store(str(tmp_path / "live.db"))
    evs = read_recording(REPLAYS / "banking.jsonl")
    cut = next(i for i, e in enumerate(evs) if isinstance(e, ev.FsaStarted)) + 1
    s.append(evs[:cut])
    s.flush()
    srv = Served(s)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.base + f"/inspect/#token={srv.token}")
        page.wait_for_selector("#calls")
        page.goto(srv.base + f"/inspect/#/call/{evs[0].call_id}")
        page.wait_for_selector("#state-facts")
        assert page.locator("#live-badge").is_visible()
        assert page.locator("#call-status").inner_text() == "active"
        page.screenshot(path=str(artifacts / "inspector-live.png"), full_page=True)
        s.append(evs[cut:])
        s.flush()
        expect(page.locator("#call-status")).to_have_text("ended", timeout=15000)
        assert page.locator("#live-badge").is_hidden()
        assert page.locator("#outcome").inner_text() == evs[-1].outcome  # type: ignore[attr-defined]
    finally:
        srv.stop()
        s.close()
