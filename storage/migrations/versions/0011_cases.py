"""review cases: one open case per applicant, priority and SLA, claims with a lease, tags,
snooze, queues; notes, decisions, saved views, reveals, court whitelist, outreach

Revision ID: 0011_cases
Revises: 0013_requests
Create Date: 2026-12-03 11:00:00
"""

from datetime import timedelta

from alembic import op
import sqlalchemy as sa


revision = '0011_cases'
down_revision = '0013_requests'
branch_labels = None
depends_on = None

_CASE_COLUMNS = [
    sa.Column('product', sa.String(length=64), nullable=True),
    sa.Column('priority', sa.Integer(), server_default='0', nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('queue', sa.String(length=16), server_default='analyst', nullable=False),
    sa.Column('assignee', sa.String(length=120), nullable=True),
    sa.Column('claimed_by', sa.String(length=120), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('snoozed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tags', sa.JSON(), nullable=True),
    sa.Column('evidence_version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution', sa.String(length=16), nullable=True),
    sa.Column('disposition', sa.String(length=32), nullable=True),
]


def _merge_existing() -> None:
    """Cases opened before: one per applicant stays open (the oldest, with every reason of
    the others appended); the others are closed as merged. Each gets a product and a due
    time of 72 hours after it opened (the policy's default)."""
    conn = op.get_bind()
    cases = sa.table('review_cases', sa.column('id'), sa.column('applicant_id'),
                     sa.column('status'), sa.column('outcome'), sa.column('reasons', sa.JSON),
                     sa.column('opened_at', sa.DateTime(timezone=True)),
                     sa.column('product'), sa.column('due_at', sa.DateTime(timezone=True)),
                     sa.column('tags', sa.JSON), sa.column('closed_at'),
                     sa.column('resolution'), sa.column('disposition'))
    apps = sa.table('applicants', sa.column('id'), sa.column('product'))
    rows = conn.execute(sa.select(cases.c.id, cases.c.applicant_id, cases.c.status,
                                  cases.c.outcome, cases.c.reasons, cases.c.opened_at,
                                  apps.c.product)
                        .join(apps, apps.c.id == cases.c.applicant_id)
                        .order_by(cases.c.applicant_id, cases.c.opened_at, cases.c.id)).all()
    keep: dict[str, dict] = {}
    for r in rows:
        update = {"product": r.product, "due_at": r.opened_at + timedelta(hours=72),
                  "tags": []}
        if r.status != 'open':
            update["closed_at"] = r.opened_at
        elif r.applicant_id in keep:
            first = keep[r.applicant_id]
            first["reasons"] += [c for c in r.reasons or [] if c not in first["reasons"]]
            if r.outcome == 'decline_recommended':
                first["outcome"] = r.outcome
            update.update(status='closed', closed_at=r.opened_at, resolution='merged')
        else:
            keep[r.applicant_id] = {"id": r.id, "reasons": list(r.reasons or []),
                                    "outcome": r.outcome}
        conn.execute(sa.update(cases).where(cases.c.id == r.id).values(**update))
    for first in keep.values():
        conn.execute(sa.update(cases).where(cases.c.id == first["id"]).values(
            reasons=first["reasons"], outcome=first["outcome"]))


def upgrade() -> None:
    with op.batch_alter_table('review_cases', schema=None) as batch_op:
        batch_op.alter_column('status', existing_type=sa.String(length=16),
                              type_=sa.String(length=24))
        for col in _CASE_COLUMNS:
            batch_op.add_column(col)
    _merge_existing()
    with op.batch_alter_table('review_cases', schema=None) as batch_op:
        batch_op.create_index('ix_review_cases_queue', ['status', 'queue', 'due_at', 'id'])
        batch_op.create_index('ix_review_cases_urgency',
                              ['due_at', sa.text('priority DESC'), 'id'])
        batch_op.create_index('ix_review_cases_assignee', ['assignee', 'status'])
        batch_op.create_index('ix_review_cases_claimed_by', ['claimed_by', 'lease_until'])
        batch_op.create_index('uq_review_cases_one_open', ['applicant_id'], unique=True,
                              sqlite_where=sa.text('closed_at IS NULL'),
                              postgresql_where=sa.text('closed_at IS NULL'))

    if op.get_bind().dialect.name == 'postgresql':
        # The queue's reason and tag filters (JSONB containment).
        op.execute("CREATE INDEX ix_review_cases_reasons_gin ON review_cases "
                   "USING gin ((reasons::jsonb) jsonb_path_ops)")
        op.execute("CREATE INDEX ix_review_cases_tags_gin ON review_cases "
                   "USING gin ((tags::jsonb) jsonb_path_ops)")

    op.create_table('case_notes',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('author', sa.String(length=120), nullable=False),
    sa.Column('body_ct', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['review_cases.id'], name=op.f('fk_case_notes_case_id_review_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_notes'))
    )
    op.create_index(op.f('ix_case_notes_case_id'), 'case_notes', ['case_id'])
    op.create_table('case_decisions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('disposition', sa.String(length=32), nullable=True),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('role', sa.String(length=40), nullable=False),
    sa.Column('reason_ct', sa.LargeBinary(), nullable=False),
    sa.Column('evidence_version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_by', sa.String(length=120), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['review_cases.id'], name=op.f('fk_case_decisions_case_id_review_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_decisions'))
    )
    op.create_index(op.f('ix_case_decisions_case_id'), 'case_decisions', ['case_id'])
    op.create_table('saved_views',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner', sa.String(length=120), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saved_views')),
    sa.UniqueConstraint('owner', 'name', name=op.f('uq_saved_views_owner'))
    )
    op.create_table('case_reveals',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('field', sa.String(length=32), nullable=False),
    sa.Column('reason_code', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_reveals'))
    )
    op.create_index('ix_case_reveals_actor_at', 'case_reveals', ['actor', 'at'])
    op.create_table('court_whitelist',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('case_number', sa.String(length=80), nullable=False),
    sa.Column('reason_ct', sa.LargeBinary(), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=120), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_court_whitelist'))
    )
    op.create_index(op.f('ix_court_whitelist_applicant_ref'), 'court_whitelist', ['applicant_ref'])
    op.create_table('outreach',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('case_id', sa.String(length=36), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('template', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=24), nullable=False),
    sa.Column('body_ct', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('delivery', sa.String(length=24), nullable=True),
    sa.Column('message_id', sa.String(length=80), nullable=True),
    sa.Column('sent_by', sa.String(length=120), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['review_cases.id'], name=op.f('fk_outreach_case_id_review_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outreach'))
    )
    op.create_index(op.f('ix_outreach_case_id'), 'outreach', ['case_id'])
    op.create_index('ix_outreach_status_expires', 'outreach', ['status', 'expires_at'])


def downgrade() -> None:
    for table in ('outreach', 'court_whitelist', 'case_reveals', 'saved_views',
                  'case_decisions', 'case_notes'):
        op.drop_table(table)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP INDEX ix_review_cases_reasons_gin")
        op.execute("DROP INDEX ix_review_cases_tags_gin")
    with op.batch_alter_table('review_cases', schema=None) as batch_op:
        for name in ('uq_review_cases_one_open', 'ix_review_cases_claimed_by',
                     'ix_review_cases_assignee', 'ix_review_cases_urgency',
                     'ix_review_cases_queue'):
            batch_op.drop_index(name)
        for col in reversed(_CASE_COLUMNS):
            batch_op.drop_column(col.name)
        batch_op.alter_column('status', existing_type=sa.String(length=24),
                              type_=sa.String(length=16))
