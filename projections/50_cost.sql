-- Cost and latency per voice API (docs/models.md "Cost and latency").

-- call_models: each call's voice model and API (gpt-live-* speaks GPT-Live).
CREATE OR REPLACE VIEW call_models AS
SELECT
    call_id,
    arg_min(model, seq) AS model,
    CASE WHEN starts_with(arg_min(model, seq), 'gpt-live') THEN 'gpt-live' ELSE 'realtime' END
        AS api
FROM model_sessions
WHERE type = 'SessionInitiated'
GROUP BY call_id;

-- live_sessions: each GPT-Live model session, from its ModelSessionStarted to the
-- model side's next end in the call (ConnectionLost, ModelSessionClosed or
-- CallEnded).  A WebSocket session is billed as active from start to close, so
-- billed_s is that span, or the server's reported seconds if they are larger.
CREATE OR REPLACE VIEW live_sessions AS
WITH s AS (SELECT * FROM model_sessions WHERE type = 'ModelSessionStarted'),
e AS (
    SELECT * FROM model_sessions
    WHERE type IN ('ConnectionLost', 'ModelSessionClosed', 'CallEnded')
),
spans AS (
    SELECT s.call_id, s.seq, s.session_id, s.model, s.ts AS started_at,
           e.seq AS end_seq, e.ts AS ended_at
    FROM s ASOF LEFT JOIN e ON e.call_id = s.call_id AND e.seq > s.seq
),
reported AS (
    SELECT spans.call_id, spans.seq, max(u.seconds) AS reported_s
    FROM spans
    JOIN model_sessions u ON u.call_id = spans.call_id
        AND u.type IN ('ModelUsage', 'ModelSessionClosed')
        AND u.seq > spans.seq AND (spans.end_seq IS NULL OR u.seq <= spans.end_seq)
    GROUP BY spans.call_id, spans.seq
)
SELECT
    spans.call_id, spans.session_id, spans.model, spans.started_at, spans.ended_at,
    round((epoch_us(spans.ended_at) - epoch_us(spans.started_at)) / 1e6, 3) AS wall_s,
    r.reported_s,
    greatest(
        coalesce((epoch_us(spans.ended_at) - epoch_us(spans.started_at)) / 1e6, 0),
        coalesce(r.reported_s, 0)
    ) AS billed_s
FROM spans
LEFT JOIN reported r ON r.call_id = spans.call_id AND r.seq = spans.seq;

-- model_cost: per API, calls, minutes and an estimate at list prices (USD).
-- Realtime (gpt-realtime-2, per 1M tokens): audio in $32, audio out $64, text in $4,
-- text out $24 (cached input counted at the full price: an upper bound).
-- GPT-Live: $0.05 per billed minute; its backend's tokens are listed, not priced
-- (the backend model is the deployment's choice).
CREATE OR REPLACE VIEW model_cost AS
WITH tok AS (
    SELECT call_id, sum(input_tokens) AS it, sum(output_tokens) AS ot,
           sum(input_audio_tokens) AS iat, sum(output_audio_tokens) AS oat
    FROM token_usage GROUP BY call_id
),
live AS (SELECT call_id, sum(billed_s) AS billed_s FROM live_sessions GROUP BY call_id),
per_call AS (
    SELECT
        m.api, m.call_id, coalesce(c.duration_s, 0) AS duration_s,
        coalesce(l.billed_s, 0) AS billed_s,
        coalesce(t.it, 0) AS it, coalesce(t.ot, 0) AS ot,
        coalesce(t.iat, 0) AS iat, coalesce(t.oat, 0) AS oat
    FROM call_models m
    LEFT JOIN calls c USING (call_id)
    LEFT JOIN tok t USING (call_id)
    LEFT JOIN live l USING (call_id)
)
SELECT
    api,
    count(*) AS calls,
    round(sum(duration_s) / 60, 2) AS call_minutes,
    round(sum(billed_s) / 60, 2) AS live_billed_minutes,
    sum(it) AS input_tokens,
    sum(ot) AS output_tokens,
    round(sum(CASE api WHEN 'gpt-live' THEN billed_s / 60 * 0.05
        ELSE (iat * 32 + oat * 64 + (it - iat) * 4 + (ot - oat) * 24) / 1e6 END), 4)
        AS est_usd,
    round(sum(CASE api WHEN 'gpt-live' THEN billed_s / 60 * 0.05
        ELSE (iat * 32 + oat * 64 + (it - iat) * 4 + (ot - oat) * 24) / 1e6 END)
        / nullif(sum(duration_s) / 60, 0), 4) AS usd_per_call_minute
FROM per_call
GROUP BY api
ORDER BY api;

-- latency_by_api: response latency (caller stops speaking -> first bot audio) per
-- voice API.  For GPT-Live the caller's words end at the last input transcript
-- delta before the bot answers (SpeechStopped, recorded at each delta).
CREATE OR REPLACE VIEW latency_by_api AS
SELECT
    m.api,
    count(*) AS turns,
    round(quantile_cont(l.latency_ms, 0.5), 1) AS p50_ms,
    round(quantile_cont(l.latency_ms, 0.9), 1) AS p90_ms,
    round(max(l.latency_ms), 1) AS max_ms
FROM turn_latency l
JOIN call_models m USING (call_id)
GROUP BY m.api
ORDER BY m.api;
