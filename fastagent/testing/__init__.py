"""Test doubles that speak the real protocols over real sockets: a simulated VAIC caller and scenarios."""
