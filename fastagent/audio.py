"""Audio format facts and small signal helpers.

Everything here works on raw mono audio: 16-bit little-endian PCM (``lpcm16*``)
or 8-bit G.711 μ-law.  Formats are named as VAIC names them (``raw/mulaw``,
``raw/lpcm16_8``, ``raw/lpcm16``, ``raw/lpcm16_24``); the OpenAI Realtime names
``audio/pcm`` (24 kHz PCM) and ``audio/pcmu`` (μ-law) are accepted too.

numpy is available (soxr depends on it), so the μ-law tables and the energy
measure use it: one vectorised lookup per chunk instead of a Python loop.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import soxr

from fastagent.errors import ConfigError

# Bytes of audio per millisecond, and sample rate, per format.
BYTES_PER_MS: dict[str, int] = {
    "raw/mulaw": 8,
    "raw/lpcm16_8": 16,
    "raw/lpcm16": 32,
    "raw/lpcm16_24": 48,
    "audio/pcmu": 8,
    "audio/pcm": 48,
    # GPT-Live's PCM runs at 16 or 24 kHz, so FastAgent names the rate (fastagent.live).
    "audio/pcm;rate=16000": 32,
    "audio/pcm;rate=24000": 48,
}
SAMPLE_RATE: dict[str, int] = {
    "raw/mulaw": 8000,
    "raw/lpcm16_8": 8000,
    "raw/lpcm16": 16000,
    "raw/lpcm16_24": 24000,
    "audio/pcmu": 8000,
    "audio/pcm": 24000,
    "audio/pcm;rate=16000": 16000,
    "audio/pcm;rate=24000": 24000,
}
MULAW_FORMATS = frozenset({"raw/mulaw", "audio/pcmu"})


class AudioFormatError(ConfigError):
    """An audio format name this code does not know."""


def bytes_per_ms(fmt: str) -> int:
    try:
        return BYTES_PER_MS[fmt]
    except KeyError:
        raise AudioFormatError(f"unknown audio format {fmt!r}") from None


def sample_rate(fmt: str) -> int:
    try:
        return SAMPLE_RATE[fmt]
    except KeyError:
        raise AudioFormatError(f"unknown audio format {fmt!r}") from None


def is_mulaw(fmt: str) -> bool:
    return fmt in MULAW_FORMATS


def bridge_rates(media_format: str, model_format: str) -> tuple[int, int] | None:
    """``(caller_hz, model_hz)`` when bridging a VAIC format to a model format
    resamples (16 and 8 kHz PCM), None when the audio passes through untouched
    (the same rate and encoding: μ-law ↔ ``audio/pcmu``, PCM ↔ PCM).

    A pure function of the two format names a ``SessionAccepted`` records, so the
    shell sets up the bridge from the decision alone.  Raises AudioFormatError for
    a format this module does not know, ValueError for μ-law bridged to PCM.
    """
    if is_mulaw(media_format) != is_mulaw(model_format):
        raise ValueError(f"cannot bridge {media_format} to {model_format}")
    caller_hz, model_hz = sample_rate(media_format), sample_rate(model_format)
    return None if caller_hz == model_hz else (caller_hz, model_hz)


def duration_us(nbytes: int, fmt: str) -> int:
    """Duration of ``nbytes`` of audio in ``fmt``, in microseconds (rounded down)."""
    return nbytes * 1000 // bytes_per_ms(fmt)


def duration_ms(nbytes: int, fmt: str) -> int:
    return nbytes // bytes_per_ms(fmt)


def b64_len_to_bytes(n: int, padding: int = 0) -> int:
    """Decoded size of a base64 text of ``n`` characters ending in ``padding`` ``=``."""
    return n // 4 * 3 - padding


def b64_decoded_len(b64: str | bytes) -> int:
    """Decoded size of a (well-formed) base64 text, without decoding it."""
    n = len(b64)
    if not n:
        return 0
    tail = b64[-2:]
    pad = (tail[-1:] in ("=", b"=")) + (tail[:1] in ("=", b"="))
    return n // 4 * 3 - pad


# ------------------------------------------------------------------------ μ-law
# G.711 μ-law, the standard bias-and-segment algorithm, tabulated once.

_BIAS = 0x84


def _ulaw_decode_table() -> np.ndarray:
    table = np.empty(256, dtype="<i2")
    for code in range(256):
        u = ~code & 0xFF
        t = ((u & 0x0F) << 3) + _BIAS
        t <<= (u & 0x70) >> 4
        table[code] = (_BIAS - t) if (u & 0x80) else (t - _BIAS)
    return table


def _ulaw_encode_table() -> np.ndarray:
    # The CCITT G.711 reference (14-bit magnitude, as in audioop.lin2ulaw).
    # Index: a 16-bit sample reinterpreted as unsigned (so negative values wrap).
    samples = np.arange(65536, dtype=np.int64)
    samples = np.where(samples >= 32768, samples - 65536, samples) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(samples), 8159) + 0x21
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return ((code ^ mask) & 0xFF).astype(np.uint8)


ULAW_DECODE: np.ndarray = _ulaw_decode_table()
ULAW_ENCODE: np.ndarray = _ulaw_encode_table()
ULAW_SILENCE = 0xFF  # μ-law code of sample 0


def mulaw_to_pcm16(data: bytes) -> bytes:
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_mulaw(data: bytes) -> bytes:
    return ULAW_ENCODE[np.frombuffer(data, dtype="<u2")].tobytes()


# -------------------------------------------------------------------- resampling


class Resampler:
    """Streaming int16 mono resampler (soxr), keeping filter state across chunks.

    Output lags input by the filter delay; call :meth:`flush` at the end of a
    stream to get the tail.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm16: bytes, last: bool = False) -> bytes:
        x = np.frombuffer(pcm16, dtype="<i2")
        return self._stream.resample_chunk(x, last=last).tobytes()

    def process_b64(self, b64: str | bytes) -> str:
        """base64 PCM in, base64 PCM out (what the bridge needs)."""
        return base64.b64encode(self.process(base64.b64decode(b64))).decode("ascii")

    def flush(self) -> bytes:
        return self.process(b"", last=True)


# --------------------------------------------------------------- energy detection

SPEECH_RMS = 500.0  # about -36 dBFS: well above line noise, well below speech


def rms(pcm16: bytes) -> float:
    """Root mean square of 16-bit PCM samples (0 for empty input)."""
    x = np.frombuffer(pcm16, dtype="<i2")
    if not x.size:
        return 0.0
    return math.sqrt(float(np.dot(x.astype(np.float64), x.astype(np.float64))) / x.size)


def chunk_rms(chunk: bytes, fmt: str) -> float:
    if is_mulaw(fmt):
        chunk = mulaw_to_pcm16(chunk)
    return rms(chunk)


def is_speech(chunk: bytes, fmt: str, threshold: float = SPEECH_RMS) -> bool:
    """Energy voice detection: enough for tones against silence, not for real voices."""
    return chunk_rms(chunk, fmt) >= threshold


# -------------------------------------------------------------- test signal makers


def silence(ms: int, fmt: str) -> bytes:
    n = ms * bytes_per_ms(fmt)
    if is_mulaw(fmt):
        return bytes([ULAW_SILENCE]) * n
    return bytes(n)


def tone(
    ms: int, fmt: str, freq: float = 440.0, amplitude: int = 8000, offset_samples: int = 0
) -> bytes:
    """A sine tone; ``offset_samples`` keeps the phase continuous across chunks."""
    rate = sample_rate(fmt)
    n = ms * rate // 1000
    t = np.arange(offset_samples, offset_samples + n, dtype=np.float64)
    pcm = (amplitude * np.sin(2 * np.pi * freq * t / rate)).astype("<i2").tobytes()
    return pcm16_to_mulaw(pcm) if is_mulaw(fmt) else pcm
