"""The peer: the same VAIC ↔ Realtime bridge built with Pipecat, one pipeline per call.

bench/bench_bridge.py runs it as target ``pipecat``, beside ``relay`` and
``service``, against the same load generator and fake model:

* Pipecat's FastAPI WebSocket transport serves ``/audiocodes`` under uvicorn;
* a small VAIC frame serializer (below) turns ``userStream.chunk`` into
  ``InputAudioRawFrame`` and ``OutputAudioRawFrame`` into ``playStream.chunk``;
* Pipecat's ``OpenAIRealtimeLLMService`` (speech to speech) talks to the fake
  model at ``--upstream``.

The VAIC handshake (``session.initiate`` → ``session.accepted``,
``userStream.start`` → ``userStream.started``) is answered by the endpoint before
the pipeline starts, as a Pipecat telephony app answers its provider's "start".

μ-law passes through: Pipecat's Realtime service resamples everything to and from
24 kHz PCM, which would scramble the load generator's timestamps inside each
payload. The service's sample rate is set to the transport's (8 kHz, 160 bytes a
chunk) so no frame is resampled; the earlier measurement (shared notes) found the
as-shipped CPU within 5 % of this variant.

Run:  python bench/pipecat_bridge.py --port 9000 --upstream ws://127.0.0.1:9001/v1
Needs the bench extra: ``pip install -e ".[bench]"`` (pipecat-ai).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.services.openai.realtime import llm as realtime_llm
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

RATE = 8000  # the transport's and (patched) the Realtime service's sample rate
realtime_llm.OPENAI_SAMPLE_RATE = RATE  # μ-law passthrough: see the module docstring


class VaicSerializer(FrameSerializer):
    """VAIC streaming-mode frames ↔ Pipecat audio frames (audio only; the bench's scope)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__()
        self.conversation_id = conversation_id
        self.stream_started = False

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            chunk = base64.b64encode(frame.audio).decode()
            msg = {"type": "playStream.chunk", "streamId": "1", "audioChunk": chunk}
            return dumps(msg)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            msg = json.loads(data)
        except ValueError:
            return None
        if msg.get("type") == "userStream.chunk":
            audio = base64.b64decode(msg.get("audioChunk", ""))
            return InputAudioRawFrame(audio=audio, sample_rate=RATE, num_channels=1)
        return None


app = FastAPI()


def dumps(msg: dict[str, str]) -> str:
    return json.dumps(msg, separators=(",", ":"))  # compact, as VAIC and the bench expect


UPSTREAM = os.environ.get("PIPECAT_BENCH_UPSTREAM", "")


@app.websocket("/audiocodes")
async def audiocodes(ws: WebSocket) -> None:
    await ws.accept()
    cid = ""
    while True:  # the VAIC handshake, before the pipeline owns the socket
        msg = json.loads(await ws.receive_text())
        kind = msg.get("type")
        if kind == "session.initiate":
            cid = msg.get("conversationId", "")
            reply = {"type": "session.accepted", "conversationId": cid, "mediaFormat": "raw/mulaw"}
            await ws.send_text(dumps(reply))
        elif kind == "userStream.start":
            await ws.send_text(dumps({"type": "userStream.started", "conversationId": cid}))
            break
    transport = FastAPIWebsocketTransport(
        websocket=ws,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=RATE,
            audio_out_sample_rate=RATE,
            audio_out_10ms_chunks=1,  # 160 bytes a write: one delta, no re-chunking delay
            add_wav_header=False,
            serializer=VaicSerializer(cid),
        ),
    )
    llm = realtime_llm.OpenAIRealtimeLLMService(api_key="bench", base_url=UPSTREAM)
    pipeline = Pipeline([transport.input(), llm, transport.output()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> None:
    global UPSTREAM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the fake model's ws:// URL")
    args = parser.parse_args()
    UPSTREAM = args.upstream
    from loguru import logger

    logger.remove()  # Pipecat logs each pipeline at DEBUG: not the bridge's cost to measure
    logger.add(sys.stderr, level="WARNING")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
