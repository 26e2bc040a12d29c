"""PostgreSQL: a process leases a slice of a budget subject's remaining allowance in one call

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

Each process admits requests in memory against the slice it holds (a row of
`budget_reservations` named after the process), and asks for more only when the slice runs low.
Under one advisory lock per subject, the function reads every budget of the subject (spend in
each one's period, and every live reservation, leases included) in one statement, and grants
at least `need` (else nothing), at most `want`, and beyond `need` at most half of the room left,
so replicas share what remains and the last of it goes one request at a time. Records settle the
slice they were admitted under in the transaction that stores them.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION tokenmeter_lease(
    p_lease_id text, p_scope text, p_subject text, p_now timestamp, p_expires_at timestamp,
    p_starts timestamp[], p_max_cost bigint[], p_max_tokens bigint[],
    p_need_cost bigint, p_need_tokens bigint, p_want_cost bigint, p_want_tokens bigint
) RETURNS TABLE (spent_cost bigint, spent_tokens bigint, reserved_cost bigint, reserved_tokens bigint,
                 granted_cost bigint, granted_tokens bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n int := array_length(p_starts, 1);
    sc bigint[]; st bigint[]; rc bigint; rt bigint;
    room_cost bigint; room_tokens bigint;
    give_cost bigint := 0; give_tokens bigint := 0;
BEGIN
    -- a lease is settled by the records and lapses with its process: no need to wait for a WAL flush
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_scope || ':' || p_subject, 0));
    -- a lease below zero (its records cost more than their estimates) reserves nothing
    SELECT coalesce(sum(greatest(y.cost_e10, 0)), 0)::bigint, coalesce(sum(greatest(y.tokens, 0)), 0)::bigint
    INTO rc, rt
    FROM budget_reservations y WHERE y.scope = p_scope AND y.subject = p_subject AND y.expires_at > p_now;
    SELECT array_agg(coalesce(d.cost, 0) ORDER BY b.i), array_agg(coalesce(d.tokens, 0) ORDER BY b.i)
    INTO sc, st
    FROM unnest(p_starts) WITH ORDINALITY AS b(start, i)
    LEFT JOIN LATERAL (
        SELECT sum(x.cost_e10)::bigint AS cost, sum(x.tokens)::bigint AS tokens FROM spend_daily x
        WHERE x.scope = p_scope AND x.subject = p_subject AND x.day >= b.start::date) d ON true;
    FOR i IN 1..n LOOP
        IF p_max_cost[i] IS NOT NULL THEN
            room_cost := least(coalesce(room_cost, p_max_cost[i] - sc[i] - rc), p_max_cost[i] - sc[i] - rc);
        END IF;
        IF p_max_tokens[i] IS NOT NULL THEN
            room_tokens := least(coalesce(room_tokens, p_max_tokens[i] - st[i] - rt), p_max_tokens[i] - st[i] - rt);
        END IF;
    END LOOP;
    IF (room_cost IS NULL OR room_cost >= p_need_cost) AND (room_tokens IS NULL OR room_tokens >= p_need_tokens) THEN
        give_cost := CASE WHEN room_cost IS NULL THEN p_need_cost
                          ELSE least(p_want_cost, greatest(p_need_cost, room_cost / 2)) END;
        give_tokens := CASE WHEN room_tokens IS NULL THEN p_need_tokens
                            ELSE least(p_want_tokens, greatest(p_need_tokens, room_tokens / 2)) END;
        INSERT INTO budget_reservations AS r (request_id, scope, subject, cost_e10, tokens, created_at, expires_at)
        VALUES (p_lease_id, p_scope, p_subject, give_cost, give_tokens, p_now, p_expires_at)
        ON CONFLICT (request_id, scope, subject) DO UPDATE
        SET cost_e10 = r.cost_e10 + excluded.cost_e10, tokens = r.tokens + excluded.tokens,
            expires_at = excluded.expires_at;
    END IF;
    FOR i IN 1..n LOOP
        spent_cost := sc[i]; spent_tokens := st[i]; reserved_cost := rc; reserved_tokens := rt;
        granted_cost := give_cost; granted_tokens := give_tokens;
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
        op.execute("DROP FUNCTION IF EXISTS tokenmeter_lease(text, text, text, timestamp, timestamp, timestamp[], "
                   "bigint[], bigint[], bigint, bigint, bigint, bigint)")
