"""Test doubles speaking the real protocols over real sockets (simulated VAIC caller, scenarios).

:func:`play_scenario` plays a scenario against an agent end to end and returns
the recorded call (see :mod:`fastagent.testing.play`).
"""

from fastagent.testing.play import PlayedCall, play_scenario

__all__ = ["PlayedCall", "play_scenario"]
