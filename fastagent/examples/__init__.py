"""Example agents, their demo backends and demo scenarios: not part of the core.

* ``banking``, ``healthcare``, ``retail`` - agents (each module exports ``AGENT``),
  found by name through :func:`fastagent.agents.get_agent`;
* ``backends`` - their stdio MCP servers (``python -m fastagent.examples.backends.bank``),
  with seed data in ``data/*.sql``;
* ``scenarios/*.json`` - scripted calls for ``fastagent demo`` and the tests.

Nothing in the engine imports this package; the registry loads an example agent
only when it is named.
"""
