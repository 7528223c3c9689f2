"""The imperative shell: sockets, timers, tools and the store around the core.

For each call, VAIC dials ``/audiocodes``; the shell turns every frame it observes
into an input event, appends it, hands it to the engine core, appends the core's
decisions and executes them.  Its modules, along the seams of a call:

* :mod:`~fastagent.service.config` - :class:`ServiceConfig` (flags, ``FASTAGENT_*``);
* :mod:`~fastagent.service.app` - the ASGI app (``/audiocodes``, ``/healthz``, ``/mcp``);
* :mod:`~fastagent.service.process` - :class:`Service`: the calls of this process and
  what they share (store, MCP tool hubs, the OpenAI SDK client);
* :mod:`~fastagent.service.vaic_socket` - the VAIC socket's ordered lane and fast lane;
* :mod:`~fastagent.service.call` - :class:`CallSession`, the call runner, composed of:
  :mod:`~fastagent.service.recording` (record, decide; durability),
  :mod:`~fastagent.service.caller_link` (the caller side, caller audio),
  :mod:`~fastagent.service.model_link` (the model link interface and the call's
  model side, model audio; Realtime in :mod:`~fastagent.service.realtime_link`),
  :mod:`~fastagent.service.ownership` (claim, grace, hand-over, checkpoints);
* :mod:`~fastagent.service.executor` - the decision table: how each decision is acted on;
* :mod:`~fastagent.service.ownership` - initiate, resume, claim: one owner per call;
* :mod:`~fastagent.service.gc_tuning` - :func:`tune_gc` for a serving process.

See docs/architecture.md for the picture.
"""

from fastagent.errors import ConfigError, StoreError
from fastagent.service.app import app_from_env, create_app
from fastagent.service.call import CallSession
from fastagent.service.config import ServiceConfig
from fastagent.service.gc_tuning import tune_gc
from fastagent.service.process import Service

__all__ = [
    "CallSession",
    "ConfigError",
    "Service",
    "ServiceConfig",
    "StoreError",
    "app_from_env",
    "create_app",
    "tune_gc",
]
