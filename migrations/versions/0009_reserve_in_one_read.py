"""PostgreSQL: the reserve function reads spend and reservations in one statement, and counts a
live reservation whatever day it was made

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

Read in two statements, a transaction storing a record (which adds its spend and deletes its
reservation at once) could commit between them: the request then counted as neither. And a
reservation made before midnight still holds until its record arrives, on whichever day.

The transaction that reserves also skips waiting for its WAL flush (synchronous_commit off, for
that transaction only): a reservation lost in a database crash costs nothing, as the request's
record still arrives, and the wait was most of a reservation's time.
"""

from importlib import util
from pathlib import Path

from alembic import op

revision = "0009"
down_revision = "0008"
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
    sc bigint[]; st bigint[]; rc bigint[]; rt bigint[];
    fits boolean := true;
BEGIN
    -- a reservation lives minutes and is rebuilt by nothing: it need not wait for a WAL flush
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR lock_key IN
        SELECT DISTINCT hashtextextended(s.scope || ':' || s.subject, 0)
        FROM unnest(p_scopes, p_subjects) AS s(scope, subject) ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;
    -- one statement, so one snapshot, taken after every lock is held
    SELECT array_agg(coalesce(d.cost, 0) ORDER BY b.i), array_agg(coalesce(d.tokens, 0) ORDER BY b.i),
           array_agg(coalesce(r.cost, 0) ORDER BY b.i), array_agg(coalesce(r.tokens, 0) ORDER BY b.i)
    INTO sc, st, rc, rt
    FROM unnest(p_scopes, p_subjects, p_starts) WITH ORDINALITY AS b(scope, subject, start, i)
    LEFT JOIN LATERAL (
        SELECT sum(x.cost_e10)::bigint AS cost, sum(x.tokens)::bigint AS tokens FROM spend_daily x
        WHERE x.scope = b.scope AND x.subject = b.subject AND x.day >= b.start::date) d ON true
    LEFT JOIN LATERAL (
        SELECT sum(y.cost_e10)::bigint AS cost, sum(y.tokens)::bigint AS tokens FROM budget_reservations y
        WHERE y.scope = b.scope AND y.subject = b.subject AND y.expires_at > p_now) r ON true;
    FOR i IN 1..n LOOP
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
        op.execute(_function_of_0004())


def _function_of_0004() -> str:
    path = Path(__file__).with_name("0004_reserve_function.py")
    spec = util.spec_from_file_location("reserve_function_0004", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)
