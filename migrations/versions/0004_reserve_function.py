"""PostgreSQL: check-and-reserve as one function call (one round trip, one statement)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

The function takes an advisory lock per budget subject (in a fixed order, so two callers never
deadlock), then reads spend and live reservations, each query of a VOLATILE function seeing what
committed before the lock was granted, and reserves only if every budget has room. SQLite has no
such function: there one process serialises its own admissions (storage/budget_store.py).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION tokenmeter_reserve(
    p_request_id text, p_now timestamp, p_expires_at timestamp,
    p_scopes text[], p_subjects text[], p_starts timestamp[], p_max_cost bigint[], p_max_tokens bigint[],
    p_cost bigint, p_tokens bigint
) RETURNS TABLE (spent_cost bigint, spent_tokens bigint, reserved_cost bigint, reserved_tokens bigint,
                 admitted boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lock_key bigint;
    n int := array_length(p_scopes, 1);
    sc bigint[] := '{}'; st bigint[] := '{}'; rc bigint[] := '{}'; rt bigint[] := '{}';
    fits boolean := true;
BEGIN
    FOR lock_key IN
        SELECT DISTINCT hashtextextended(s.scope || ':' || s.subject, 0)
        FROM unnest(p_scopes, p_subjects) AS s(scope, subject) ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;
    FOR i IN 1..n LOOP
        sc[i] := coalesce((SELECT sum(d.cost_e10) FROM spend_daily d WHERE d.scope = p_scopes[i]
                           AND d.subject = p_subjects[i] AND d.day >= p_starts[i]::date), 0);
        st[i] := coalesce((SELECT sum(d.tokens) FROM spend_daily d WHERE d.scope = p_scopes[i]
                           AND d.subject = p_subjects[i] AND d.day >= p_starts[i]::date), 0);
        rc[i] := coalesce((SELECT sum(r.cost_e10) FROM budget_reservations r WHERE r.scope = p_scopes[i]
                           AND r.subject = p_subjects[i] AND r.created_at >= p_starts[i]
                           AND r.expires_at > p_now), 0);
        rt[i] := coalesce((SELECT sum(r.tokens) FROM budget_reservations r WHERE r.scope = p_scopes[i]
                           AND r.subject = p_subjects[i] AND r.created_at >= p_starts[i]
                           AND r.expires_at > p_now), 0);
        IF (p_max_cost[i] IS NOT NULL AND sc[i] + rc[i] + p_cost > p_max_cost[i])
           OR (p_max_tokens[i] IS NOT NULL AND st[i] + rt[i] + p_tokens > p_max_tokens[i]) THEN
            fits := false;
        END IF;
    END LOOP;
    IF fits THEN
        INSERT INTO budget_reservations (request_id, scope, subject, cost_e10, tokens, created_at, expires_at)
        SELECT DISTINCT p_request_id, s.scope, s.subject, p_cost, p_tokens, p_now, p_expires_at
        FROM unnest(p_scopes, p_subjects) AS s(scope, subject);
    END IF;
    FOR i IN 1..n LOOP
        spent_cost := sc[i]; spent_tokens := st[i]; reserved_cost := rc[i]; reserved_tokens := rt[i];
        admitted := fits;
        RETURN NEXT;
    END LOOP;
END;
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS tokenmeter_reserve")
