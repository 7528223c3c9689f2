-- fsa_runs: one row per run of a Finite State Agent (from an FsaStarted to the
-- next FsaStarted of the same FSA in the call). outcome is the FsaFinished outcome;
-- a run that never finished is 'abandoned' if its call has ended, else 'open'.
CREATE OR REPLACE VIEW fsa_runs AS
WITH numbered AS (
    SELECT *,
        sum(CASE WHEN kind = 'started' THEN 1 ELSE 0 END)
            OVER (PARTITION BY call_id, fsa ORDER BY seq) AS run
    FROM fsa_transitions
),
runs AS (
    SELECT
        call_id, fsa, run,
        min(ts) AS started_at,
        max(ts) FILTER (kind = 'finished') AS finished_at,
        arg_max(outcome, seq) FILTER (kind = 'finished') AS finished_outcome,
        arg_max(target, seq) FILTER (kind IN ('started', 'transition')) AS last_state,
        count(*) FILTER (kind = 'transition') AS transitions
    FROM numbered
    WHERE run > 0
    GROUP BY call_id, fsa, run
)
SELECT
    r.*,
    coalesce(r.finished_outcome,
             CASE WHEN c.ended_at IS NOT NULL THEN 'abandoned' ELSE 'open' END) AS outcome
FROM runs r
LEFT JOIN calls c USING (call_id);

-- fsa_funnel: per FSA, how many runs started, how many reached each state (states
-- ordered by how early runs reach them on average), and how the runs ended.
-- pct is relative to the runs started.
CREATE OR REPLACE VIEW fsa_funnel AS
WITH numbered AS (
    SELECT *,
        sum(CASE WHEN kind = 'started' THEN 1 ELSE 0 END)
            OVER (PARTITION BY call_id, fsa ORDER BY seq) AS run
    FROM fsa_transitions
),
reached AS (  -- each state a run entered, with the step at which it first got there
    SELECT call_id, fsa, run, target AS state, min(seq) AS first_seq
    FROM numbered
    WHERE run > 0 AND kind IN ('started', 'transition')
    GROUP BY ALL
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY call_id, fsa, run ORDER BY first_seq) AS step
    FROM reached
),
started AS (
    SELECT fsa, count(*) AS runs FROM fsa_runs GROUP BY fsa
),
steps AS (
    SELECT fsa, 0 AS ord, 'started' AS stage, '(started)' AS name, runs FROM started
    UNION ALL
    SELECT fsa, avg(step), 'state', state, count(*) FROM ranked GROUP BY fsa, state
    UNION ALL
    SELECT fsa, 1e9, 'outcome', outcome, count(*) FROM fsa_runs GROUP BY fsa, outcome
)
SELECT
    r.fsa, r.stage, r.name, r.runs,
    round(100.0 * r.runs / s.runs, 1) AS pct
FROM steps r JOIN started s USING (fsa)
ORDER BY r.fsa, r.ord, r.runs DESC, r.name;
