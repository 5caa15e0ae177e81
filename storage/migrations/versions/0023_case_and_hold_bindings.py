"""legal holds, review cases' closings and case decisions bound to the audit chain: each
carries the sequence number of the audit event holding it

Revision ID: 0023_case_and_hold_bindings
Revises: 0022_court_list
Create Date: 2026-12-10 12:00:00

A hold's `subject.hold_placed` event has always held the hold (id, basis, purpose, until):
its row is given that event's number here. Closed cases and case decisions written before
have no hash in the chain: the first store opened with the key ring after this revision
binds them once (`CaseRepository.bind_existing`, audited as `cases.bound`); from then on a
closing or a decision without its binding stands for nothing.
"""

from alembic import op
import sqlalchemy as sa


revision = '0023_case_and_hold_bindings'
down_revision = '0022_court_list'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('legal_holds') as b:
        b.add_column(sa.Column('audit_seq', sa.Integer(), nullable=True))
    with op.batch_alter_table('review_cases') as b:
        b.add_column(sa.Column('closed_seq', sa.Integer(), nullable=True))
    with op.batch_alter_table('case_decisions') as b:
        b.add_column(sa.Column('audit_seq', sa.Integer(), nullable=True))
    conn = op.get_bind()
    # The hold's id as the event's detail holds it (JSON on both dialects).
    hold_id = (
        "json_extract(e.detail, '$.hold_id')"
        if conn.dialect.name == 'sqlite'
        else "(e.detail::json ->> 'hold_id')"
    )
    conn.execute(sa.text(
        "UPDATE legal_holds SET audit_seq = (SELECT max(e.seq) FROM audit_events e "
        f"WHERE e.kind = 'subject.hold_placed' AND {hold_id} = legal_holds.id)"
    ))


def downgrade() -> None:
    for table, column in (
        ('case_decisions', 'audit_seq'),
        ('review_cases', 'closed_seq'),
        ('legal_holds', 'audit_seq'),
    ):
        with op.batch_alter_table(table) as b:
            b.drop_column(column)
