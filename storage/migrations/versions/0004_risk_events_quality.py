"""behaviour events and alerts, data-quality results

Revision ID: 0004_risk
Revises: 0003
Create Date: 2026-11-22 23:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004_risk'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('behavior_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('change', sa.String(length=16), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('device_bidx', sa.String(length=64), nullable=True),
    sa.Column('ip_bidx', sa.String(length=64), nullable=True),
    sa.Column('region_bidx', sa.String(length=64), nullable=True),
    sa.Column('geo_ct', sa.LargeBinary(), nullable=True),
    sa.Column('dedup_key', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_behavior_events')),
    sa.UniqueConstraint('dedup_key', name=op.f('uq_behavior_events_dedup_key'))
    )
    op.create_index('ix_behavior_events_subject', 'behavior_events',
                    ['applicant_ref', 'occurred_at'], unique=False)
    op.create_table('behavior_alerts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('review_case_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_behavior_alerts'))
    )
    op.create_index(op.f('ix_behavior_alerts_applicant_ref'), 'behavior_alerts',
                    ['applicant_ref'], unique=False)
    op.create_table('quality_results',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('suite', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('failed', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quality_results'))
    )
    op.create_index(op.f('ix_quality_results_run_id'), 'quality_results', ['run_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_quality_results_run_id'), table_name='quality_results')
    op.drop_table('quality_results')
    op.drop_index(op.f('ix_behavior_alerts_applicant_ref'), table_name='behavior_alerts')
    op.drop_table('behavior_alerts')
    op.drop_index('ix_behavior_events_subject', table_name='behavior_events')
    op.drop_table('behavior_events')
