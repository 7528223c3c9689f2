-- turn_latency: for each caller turn, the time from the caller stopping speaking
-- (SpeechStopped) to the first bot audio chunk of the next response (the first
-- BotAudio after it, from response_audio). If the caller stopped speaking several
-- times before the bot answered, only the last stop counts for that response.
CREATE OR REPLACE VIEW turn_latency AS
SELECT
    s.call_id,
    s.seq AS speech_seq,
    s.item_id,
    s.ts AS speech_stopped_at,
    a.response_id,
    a.first_at AS first_audio_at,
    (epoch_us(a.first_at) - epoch_us(s.ts)) / 1000.0 AS latency_ms
FROM (SELECT * FROM speech WHERE type = 'SpeechStopped') s
ASOF JOIN response_audio a ON a.call_id = s.call_id AND a.first_seq > s.seq
QUALIFY row_number() OVER (PARTITION BY a.call_id, a.response_id ORDER BY s.seq DESC) = 1;

-- latency_percentiles: response latency over all turns, in milliseconds.
CREATE OR REPLACE VIEW latency_percentiles AS
SELECT
    count(*) AS turns,
    round(quantile_cont(latency_ms, 0.5), 1) AS p50_ms,
    round(quantile_cont(latency_ms, 0.9), 1) AS p90_ms,
    round(quantile_cont(latency_ms, 0.99), 1) AS p99_ms,
    round(max(latency_ms), 1) AS max_ms
FROM turn_latency;

-- barge_ins: each time the caller interrupted the bot (PlaybackStopped with reason
-- barge_in), with the truncation that followed it in the same call (TruncateRequested:
-- the item and how much of it the caller heard). A TruncateRequested with no
-- barge-in stop before it (and after the previous truncation) is listed on its own.
CREATE OR REPLACE VIEW barge_ins AS
WITH stops AS (
    SELECT * FROM playback WHERE type = 'PlaybackStopped' AND reason = 'barge_in'
),
truncs AS (
    SELECT * FROM playback WHERE type = 'TruncateRequested'
),
paired AS (
    SELECT
        s.call_id, s.seq, s.ts, s.stream_id, s.played_ms,
        t.seq AS truncate_seq, t.item_id, t.audio_end_ms
    FROM stops s
    ASOF LEFT JOIN truncs t ON t.call_id = s.call_id AND t.seq >= s.seq
)
SELECT call_id, seq, ts, stream_id, played_ms, item_id, audio_end_ms FROM paired
UNION ALL
SELECT t.call_id, t.seq, t.ts, NULL, NULL, t.item_id, t.audio_end_ms
FROM truncs t
WHERE NOT EXISTS (
    SELECT 1 FROM paired p WHERE p.call_id = t.call_id AND p.truncate_seq = t.seq
);

-- token_usage: tokens per model response (ResponseDone).
CREATE OR REPLACE VIEW token_usage AS
SELECT call_id, seq, ts, response_id, status,
       input_tokens, output_tokens, total_tokens,
       input_audio_tokens, output_audio_tokens, cached_tokens
FROM responses
WHERE type = 'ResponseDone';
