-- Tables fed by `fastagent sync` (projections/analytics.py), one batch per transaction.
-- They hold "raw-ish" per-event rows; everything that needs several events
-- (call start/end, tool durations, latency, funnels) is a view in the other files.
-- `ts` columns: UTC timestamps (microseconds) from the events' `at` (a reserved word in DuckDB 2).
-- `position` is the event's position in the store's global log.

-- The last log position applied: updated in the same transaction as the rows,
-- so every event is applied exactly once and a sync resumes where it stopped.
CREATE TABLE IF NOT EXISTS sync_state (
    id INTEGER PRIMARY KEY,          -- always 1
    position BIGINT NOT NULL,        -- last global log position applied (skipped rows included)
    events BIGINT NOT NULL,          -- events applied to the tables so far
    schema_version INTEGER NOT NULL
);

-- Events not applied: unknown type, a newer version than this code reads, corrupt.
CREATE TABLE IF NOT EXISTS sync_skipped (
    topic VARCHAR,
    reason VARCHAR,                  -- unknown_type | newer_version | corrupt
    events BIGINT,
    first_position BIGINT,
    last_position BIGINT,
    PRIMARY KEY (topic, reason)
);

-- Events per call and type (audio included): cheap answers to "how much happened".
CREATE TABLE IF NOT EXISTS event_counts (
    call_id VARCHAR,
    type VARCHAR,
    events BIGINT,
    PRIMARY KEY (call_id, type)
);

-- Call lifecycle: SessionInitiated/Resumed/Ended/Accepted/Rejected, CallStarted,
-- ConnectionLost/Restored, GraceExpired, HangupRequested, TransferRequested,
-- Dtmf, DtmfSent, CallEnded.
CREATE TABLE IF NOT EXISTS call_events (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    agent VARCHAR,                   -- SessionInitiated.config.agent
    caller VARCHAR, callee VARCHAR,  -- SessionInitiated / CallStarted
    reason VARCHAR,                  -- SessionEnded/CallEnded/Hangup/Transfer/ConnectionLost reason
    outcome VARCHAR,                 -- CallEnded.outcome
    detail VARCHAR                   -- reason_code, transfer target, side, instance, digits
);

-- Final transcript of each conversation item (Transcript events), in log order.
CREATE TABLE IF NOT EXISTS turns (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP,
    role VARCHAR, item_id VARCHAR, text VARCHAR, response_id VARCHAR
);

-- Caller voice activity (SpeechStarted / SpeechStopped).
CREATE TABLE IF NOT EXISTS speech (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    item_id VARCHAR, audio_ms BIGINT
);

-- Model responses (ResponseStarted / ResponseDone, with usage on ResponseDone).
CREATE TABLE IF NOT EXISTS responses (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    response_id VARCHAR, status VARCHAR, reason VARCHAR,
    input_tokens BIGINT, output_tokens BIGINT, total_tokens BIGINT,
    input_audio_tokens BIGINT, output_audio_tokens BIGINT, cached_tokens BIGINT
);

-- Function calls: FunctionCallRequested/Dispatched/Skipped, ToolResult, FunctionOutputSent.
CREATE TABLE IF NOT EXISTS tool_events (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    call_id_tool VARCHAR,            -- the model's function call id (NULL if not recorded)
    name VARCHAR, arguments VARCHAR, server VARCHAR,
    ok BOOLEAN, error VARCHAR, duration_us BIGINT, reason VARCHAR
);

-- The decision trail of Finite State Agents: kind = started | transition | finished.
-- started: target = initial state; finished: source = final state, outcome set.
CREATE TABLE IF NOT EXISTS fsa_transitions (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, kind VARCHAR,
    fsa VARCHAR, source VARCHAR, target VARCHAR, trigger VARCHAR,
    guard VARCHAR, reason VARCHAR, outcome VARCHAR
);

-- Playback decisions and truncation: PlaybackStarted/Stopped, TruncateRequested, ItemTruncated.
CREATE TABLE IF NOT EXISTS playback (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    stream_id VARCHAR, response_id VARCHAR, item_id VARCHAR,
    reason VARCHAR, played_ms BIGINT, audio_end_ms BIGINT
);

-- Errors and disconnections: ModelError, ProtocolError.
CREATE TABLE IF NOT EXISTS errors (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    side VARCHAR, code VARCHAR, message VARCHAR
);

-- Model-side failures as the engine core read them (ModelFailureHandled): kind =
-- response_failed | response_incomplete | request_refused | active_response |
-- rate_limited | session_expired | error | timeout | unreachable |
-- transcription_failed | transcription_missing; action = retry | apology |
-- fallback | settled | reconnect | none; attempt = failed replies in a row.
CREATE TABLE IF NOT EXISTS model_failures (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP,
    kind VARCHAR, action VARCHAR, code VARCHAR, message VARCHAR,
    response_id VARCHAR, item_id VARCHAR, attempt BIGINT
);

-- Audio boundaries are most of the log: only aggregates are kept.
-- Caller audio (CallerAudio) and bot audio (BotAudio) per call and direction.
CREATE TABLE IF NOT EXISTS audio_stats (
    call_id VARCHAR, direction VARCHAR,   -- caller | bot
    chunks BIGINT, nbytes BIGINT, duration_us BIGINT,
    first_at TIMESTAMP, last_at TIMESTAMP,
    PRIMARY KEY (call_id, direction)
);

-- Bot audio per response: when its first chunk arrived (for latency) and totals.
CREATE TABLE IF NOT EXISTS response_audio (
    call_id VARCHAR, response_id VARCHAR, item_id VARCHAR,
    first_seq BIGINT, first_at TIMESTAMP, last_at TIMESTAMP,
    chunks BIGINT, nbytes BIGINT, duration_us BIGINT,
    PRIMARY KEY (call_id, response_id)
);

-- The voice model of each call and GPT-Live's model sessions (docs/models.md):
-- SessionInitiated (model = CallConfig.model), ModelSessionStarted (model,
-- session_id), ModelUsage (seconds: cumulative billable seconds of the session),
-- ModelSessionClosed (seconds: final), ConnectionLost of the model side, CallEnded.
CREATE TABLE IF NOT EXISTS model_sessions (
    position BIGINT, call_id VARCHAR, seq BIGINT, ts TIMESTAMP, type VARCHAR,
    model VARCHAR, session_id VARCHAR, seconds DOUBLE
);
