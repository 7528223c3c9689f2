-- tool_calls: one row per dispatched function call, joined with its ToolResult.
-- The join key is (call, tool name, function call id); the n-th dispatch of that
-- key pairs with its n-th result, which also works when no function call id was
-- recorded. Calls the engine refused to run (FunctionCallSkipped) are included
-- with status 'skipped'. The engine's own tools (server 'fastagent') are answered
-- by the core itself: status 'ok', duration_ms NULL. duration_ms is otherwise the
-- tool's measured duration, else the time between dispatch and result.
CREATE OR REPLACE VIEW tool_calls AS
WITH d AS (
    SELECT *, row_number() OVER (PARTITION BY call_id, name, call_id_tool ORDER BY seq) AS n
    FROM tool_events WHERE type = 'FunctionCallDispatched'
),
r AS (
    SELECT *, row_number() OVER (PARTITION BY call_id, name, call_id_tool ORDER BY seq) AS n
    FROM tool_events WHERE type = 'ToolResult'
)
SELECT
    d.call_id,
    d.call_id_tool,
    d.name,
    d.arguments,
    d.server,
    d.ts AS dispatched_at,
    r.ok AS result_ok,
    nullif(r.error, '') AS error,
    CASE
        WHEN r.seq IS NULL THEN NULL
        WHEN r.duration_us > 0 THEN r.duration_us / 1000.0
        ELSE (epoch_us(r.ts) - epoch_us(d.ts)) / 1000.0
    END AS duration_ms,
    CASE
        WHEN r.seq IS NOT NULL THEN CASE WHEN r.ok THEN 'ok' ELSE 'error' END
        -- The engine's own tools (FSA steps, end_call, transfer) are decided and
        -- answered inside the core: no ToolResult follows, and none is owed.
        WHEN d.server = 'fastagent' THEN 'ok'
        ELSE 'pending'
    END AS status
FROM d
LEFT JOIN r
    ON r.call_id = d.call_id AND r.name = d.name
    AND r.call_id_tool IS NOT DISTINCT FROM d.call_id_tool AND r.n = d.n
UNION ALL
SELECT call_id, call_id_tool, name, arguments, server, ts, NULL, reason, NULL, 'skipped'
FROM tool_events WHERE type = 'FunctionCallSkipped';

-- tool_error_rates: per tool, how often it failed (skipped calls are not counted).
CREATE OR REPLACE VIEW tool_error_rates AS
SELECT
    name,
    count(*) FILTER (status IN ('ok', 'error')) AS calls,
    count(*) FILTER (status = 'error') AS errors,
    round(100.0 * count(*) FILTER (status = 'error')
          / nullif(count(*) FILTER (status IN ('ok', 'error')), 0), 1) AS error_pct,
    count(*) FILTER (status = 'skipped') AS skipped,
    count(*) FILTER (status = 'pending') AS pending,
    round(quantile_cont(duration_ms, 0.5), 1) AS p50_ms,
    round(quantile_cont(duration_ms, 0.9), 1) AS p90_ms
FROM tool_calls
GROUP BY name
ORDER BY calls DESC, name;
