"""Test doubles speaking the real protocols over real sockets (simulated VAIC caller, scenarios)."""
