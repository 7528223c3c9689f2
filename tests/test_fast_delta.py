"""The audio fast lane's reading of a model frame (realtime.audio_delta_now) is as
strict as the full parser: whatever bytes come in, a frame it accepts is one that
parse_server_event accepts as the same AudioDelta, whose delta passes
audio_delta_error, and in which wire.strict_error finds no duplicate key, nesting
or escape; and the
frames the API writes are accepted (else the fast lane would be no lane)."""

from __future__ import annotations

import base64

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastagent import realtime as rt
from fastagent import wire

DELTA_HEAD = b'{"type":"response.output_audio.delta",'
PROPS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.text(max_size=12) | st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=6
)
indexes = st.integers(min_value=-(2**65), max_value=2**65) | st.integers(0, 3)
audio = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
deltas = audio | st.text(alphabet='AB+/=\\"{}-_ \n', max_size=16) | st.text(max_size=8)


@st.composite
def canonical(draw: st.DrawFn) -> bytes:
    """A delta frame as the API writes it (msgspec's compact form, its key order)."""
    event = rt.AudioDelta(
        event_id=draw(ids),
        response_id=draw(ids),
        item_id=draw(ids),
        output_index=draw(indexes),
        content_index=draw(indexes),
        delta=draw(deltas),
    )
    try:
        return msgspec.json.encode(event)
    except Exception:  # (a lone surrogate cannot be written: any bytes then)
        return DELTA_HEAD + draw(st.binary(max_size=40))


def _mutate(data: bytes, at: int, how: int, piece: bytes) -> bytes:
    at %= len(data) + 1
    if how == 0:
        return data[:at] + piece + data[at:]  # insert
    if how == 1:
        return data[:at] + data[at + len(piece) :]  # delete
    if how == 2:
        return data[:at] + piece + data[at + len(piece) :]  # overwrite
    if how == 3:  # a duplicate key spliced in before the end
        return data[:-1] + b',"delta":"' + piece.replace(b'"', b"") + b'"}'
    return data[:-1] + b" }"


mutated = st.builds(
    _mutate,
    canonical(),
    st.integers(0, 400),
    st.integers(0, 4),
    st.sampled_from([b'"', b"\\", b",", b" ", b"{}", b"[1]", b"=", b"A", b"\\u0041", b"\xff"])
    | st.binary(min_size=1, max_size=6),
)
frames = canonical() | mutated | st.binary(max_size=200).map(lambda b: DELTA_HEAD + b)


@PROPS
@given(data=frames)
def test_the_fast_path_accepts_nothing_the_strict_parser_rejects(data: bytes) -> None:
    for sample_bytes in (1, 2):
        fast = rt.audio_delta_now(data, sample_bytes)
        assert rt.audio_delta_now(bytearray(data), sample_bytes) == fast
        assert rt.audio_delta_now(memoryview(data), sample_bytes) == fast
        if fast is None:
            continue
        strict = rt.parse_server_event(data)
        assert type(strict) is rt.AudioDelta and strict == fast
        assert rt.audio_delta_error(strict, sample_bytes) is None
        # No duplicate key, nesting, surrogate or non-finite number.  (Integers: both
        # lanes take msgspec's 64-bit ones, e.g. 20 digits, which strict_error's own
        # digit cap would not.)
        err = wire.strict_error(data)
        assert err is None or err.startswith("integer of"), err
        assert wire.is_base64(fast.delta)


@PROPS
@given(
    event_id=st.text(max_size=12),
    response_id=st.text(max_size=12),
    item_id=st.text(max_size=12),
    pcm=st.binary(max_size=64),
)
def test_the_api_s_own_frames_take_the_fast_path(
    event_id: str, response_id: str, item_id: str, pcm: bytes
) -> None:
    event = rt.AudioDelta(
        event_id=event_id,
        response_id=response_id,
        item_id=item_id,
        delta=base64.b64encode(pcm).decode(),
    )
    data = msgspec.json.encode(event)
    assert rt.audio_delta_now(data, 1) == event == rt.parse_server_event(data)
    assert (rt.audio_delta_now(data, 2) is not None) == (len(pcm) % 2 == 0)


def test_injection_through_delta_and_other_shapes_take_the_slow_lane() -> None:
    good = (
        b'{"type":"response.output_audio.delta","event_id":"e","response_id":"r",'
        b'"item_id":"i","output_index":0,"content_index":0,"delta":"AAAA"}'
    )
    assert rt.audio_delta_now(good, 1) is not None
    injected = good.replace(b'"AAAA"', b'"AA","type":"activities","x":"AA"')
    dup = good[:-1] + b',"delta":"BBBB"}'
    nested = good[:-1] + b',"x":[1]}'
    escaped = good.replace(b'"i"', b'"\\u0069"')
    untyped = good.replace(b'"type":"response.output_audio.delta",', b"")
    other = good.replace(b"output_audio.delta", b"output_audio.done")
    for data in (injected, dup, nested, escaped, untyped, other, good.decode(), b"", b"{"):
        assert rt.audio_delta_now(data, 1) is None  # type: ignore[arg-type]
    # Written another way but flat, unique and unescaped (json.dumps' spacing, other
    # key order): the strict parser takes it, so the fast lane may.
    spaced = good.replace(b'"delta":', b'"delta": ')
    reordered = (
        b'{"event_id":"e","type":"response.output_audio.delta","response_id":"r",'
        b'"item_id":"i","output_index":0,"content_index":0,"delta":"AAAA"}'
    )
    for data in (spaced, reordered):
        assert rt.audio_delta_now(data, 1) == rt.parse_server_event(data)
    assert rt.audio_delta_now(good.replace(b"AAAA", b"AA=="), 2) is None  # one byte: half a sample
    assert rt.audio_delta_now(good.replace(b"AAAA", b"AA=A"), 1) is None
