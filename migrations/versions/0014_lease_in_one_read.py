"""PostgreSQL: the lease function reads spend and leases in one statement

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

0013 read the live reservations and the spend in two statements, each with a snapshot of its
own: a record stored between them (adding its spend and taking its cost from its lease at once)
counted twice, so a process could be refused the last of an allowance that was still there.
Read in one statement, as 0009 does for reservations, every record counts once.
"""

from importlib import util
from pathlib import Path

from alembic import op

revision = "0014"
down_revision = "0013"
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
    -- one statement, so one snapshot: a record stored meanwhile counts once, as spend or as lease
    -- (a lease below zero, its records costing more than their estimates, reserves nothing)
    SELECT array_agg(coalesce(d.cost, 0) ORDER BY b.i), array_agg(coalesce(d.tokens, 0) ORDER BY b.i),
           min(r.cost), min(r.tokens)
    INTO sc, st, rc, rt
    FROM unnest(p_starts) WITH ORDINALITY AS b(start, i)
    CROSS JOIN (
        SELECT coalesce(sum(greatest(y.cost_e10, 0)), 0)::bigint AS cost,
               coalesce(sum(greatest(y.tokens, 0)), 0)::bigint AS tokens
        FROM budget_reservations y
        WHERE y.scope = p_scope AND y.subject = p_subject AND y.expires_at > p_now) r
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
        op.execute(_function_of_0013())


def _function_of_0013() -> str:
    path = Path(__file__).with_name("0013_budget_leases.py")
    spec = util.spec_from_file_location("budget_leases_0013", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)
