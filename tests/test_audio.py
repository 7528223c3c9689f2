"""Audio format facts, μ-law, resampling and energy detection."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from fastagent import audio
from fastagent.audio import Resampler


@pytest.mark.parametrize(
    ("fmt", "per_ms"),
    [("raw/mulaw", 8), ("raw/lpcm16_8", 16), ("raw/lpcm16", 32), ("raw/lpcm16_24", 48)],
)
def test_bytes_per_ms_and_duration(fmt: str, per_ms: int) -> None:
    assert audio.bytes_per_ms(fmt) == per_ms
    assert audio.duration_us(per_ms * 20, fmt) == 20_000
    assert audio.duration_us(1, fmt) == 1000 // per_ms
    assert len(audio.silence(20, fmt)) == len(audio.tone(20, fmt)) == per_ms * 20


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(audio.AudioFormatError, match="raw/alaw"):
        audio.duration_us(10, "raw/alaw")


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 159, 160, 960])
def test_b64_sizes(n: int) -> None:
    b64 = base64.b64encode(bytes(n))
    assert audio.b64_decoded_len(b64) == n
    assert audio.b64_decoded_len(b64.decode()) == n
    assert audio.b64_len_to_bytes(len(b64), b64.count(b"=")) == n


def test_mulaw_round_trip_is_close() -> None:
    pcm = np.linspace(-32000, 32000, 4001).astype("<i2")
    back = np.frombuffer(audio.mulaw_to_pcm16(audio.pcm16_to_mulaw(pcm.tobytes())), "<i2")
    # G.711 quantisation error is at most about 1/16 of the magnitude (+ small floor).
    err = np.abs(back.astype(np.int32) - pcm.astype(np.int32))
    assert np.all(err <= np.abs(pcm.astype(np.int32)) // 16 + 16)
    # every code decodes and re-encodes to itself (except the duplicate zero, 0x7F)
    codes = bytes(c for c in range(256) if c != 0x7F)
    assert audio.pcm16_to_mulaw(audio.mulaw_to_pcm16(codes)) == codes


def test_mulaw_known_values() -> None:
    assert audio.pcm16_to_mulaw(np.array([0, 32767, -32768], "<i2").tobytes()) == b"\xff\x80\x00"
    assert audio.mulaw_to_pcm16(b"\xff\x80\x00") == np.array([0, 32124, -32124], "<i2").tobytes()


def test_resampler_16k_to_24k_keeps_state_and_ratio() -> None:
    r = Resampler(16000, 24000)
    out = bytearray()
    for i in range(50):  # 1 s of 20 ms chunks, phase-continuous
        out += r.process(audio.tone(20, "raw/lpcm16", offset_samples=i * 320))
    out += r.flush()
    assert len(out) == 24000 * 2  # exactly 1.5x the samples once flushed
    # Continuity: the streamed output equals resampling the whole signal at once.
    whole = Resampler(16000, 24000)
    ref = whole.process(audio.tone(1000, "raw/lpcm16"), last=True)
    diff = np.abs(np.frombuffer(bytes(out), "<i2").astype(int) - np.frombuffer(ref, "<i2"))
    assert diff.max() <= 2
    # No clicks at chunk joins: the output stays a clean 440 Hz tone of the same level.
    mid = bytes(out[4800:-4800])
    assert audio.rms(mid) == pytest.approx(8000 / 2**0.5, rel=0.03)


def test_resampler_base64_helper() -> None:
    r = Resampler(24000, 8000)
    b64 = base64.b64encode(audio.tone(60, "raw/lpcm16_24")).decode()
    out = r.process_b64(b64) + base64.b64encode(r.flush()).decode()
    assert out  # base64 text
    assert isinstance(out, str)


def test_energy_detection() -> None:
    for fmt in ("raw/mulaw", "raw/lpcm16", "raw/lpcm16_8", "raw/lpcm16_24"):
        assert audio.is_speech(audio.tone(20, fmt), fmt)
        assert not audio.is_speech(audio.silence(20, fmt), fmt)
        assert not audio.is_speech(audio.tone(20, fmt, amplitude=100), fmt)
    assert audio.rms(b"") == 0.0
    assert audio.silence(1, "raw/mulaw") == b"\xff" * 8
