-- calls: one row per call, folded from call_events and audio_stats.
-- started_at: SessionInitiated (else the first lifecycle event); ended_at: CallEnded
-- (else SessionEnded); outcome: CallEnded.outcome, else its reason, else 'ended'
-- if only the platform's SessionEnded is known, else 'live'.
CREATE OR REPLACE VIEW calls AS
WITH c AS (
    SELECT
        call_id,
        coalesce(min(ts) FILTER (type = 'SessionInitiated'), min(ts)) AS started_at,
        coalesce(max(ts) FILTER (type = 'CallEnded'),
                 max(ts) FILTER (type = 'SessionEnded')) AS ended_at,
        arg_max(nullif(outcome, ''), seq) FILTER (type = 'CallEnded') AS ended_outcome,
        arg_max(nullif(reason, ''), seq) FILTER (type = 'CallEnded') AS ended_reason,
        bool_or(type = 'SessionEnded') AS session_ended,
        arg_min(agent, seq) FILTER (type = 'SessionInitiated') AS agent,
        coalesce(arg_min(nullif(caller, ''), seq) FILTER (type = 'CallStarted'),
                 arg_min(caller, seq) FILTER (type = 'SessionInitiated')) AS caller,
        arg_min(callee, seq) FILTER (type = 'CallStarted') AS callee,
        count(*) FILTER (type = 'SessionResumed') AS resumes
    FROM call_events
    GROUP BY call_id
)
SELECT
    c.call_id,
    c.started_at,
    c.ended_at,
    round((epoch_us(c.ended_at) - epoch_us(c.started_at)) / 1e6, 3) AS duration_s,
    coalesce(c.ended_outcome, c.ended_reason,
             CASE WHEN c.session_ended THEN 'ended' ELSE 'live' END) AS outcome,
    c.agent,
    c.caller,
    c.callee,
    c.resumes,
    round(coalesce(ca.duration_us, 0) / 1e6, 3) AS caller_audio_s,
    round(coalesce(ba.duration_us, 0) / 1e6, 3) AS bot_audio_s
FROM c
LEFT JOIN audio_stats ca ON ca.call_id = c.call_id AND ca.direction = 'caller'
LEFT JOIN audio_stats ba ON ba.call_id = c.call_id AND ba.direction = 'bot';

-- outcomes: how calls ended.
CREATE OR REPLACE VIEW outcomes AS
SELECT
    outcome,
    count(*) AS calls,
    round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct,
    round(avg(duration_s), 1) AS avg_duration_s
FROM calls
GROUP BY outcome
ORDER BY calls DESC, outcome;

-- model_failure_counts: model-side failures by kind and what the engine did.
CREATE OR REPLACE VIEW model_failure_counts AS
SELECT
    kind,
    action,
    count(*) AS failures,
    count(DISTINCT call_id) AS calls,
    arg_max(nullif(code, ''), seq) AS last_code
FROM model_failures
GROUP BY kind, action
ORDER BY failures DESC, kind, action;
