"""subject requests, consent asks, corrected values

Revision ID: 0013_requests
Revises: 0010_people
Create Date: 2026-12-03 11:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0013_requests'
down_revision = '0010_people'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subject_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('subject_ref', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('target', sa.String(length=32), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_by', sa.String(length=120), nullable=False),
    sa.Column('assignee', sa.String(length=120), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('answered_by', sa.String(length=120), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('policy_version', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subject_requests'))
    )
    op.create_index(op.f('ix_subject_requests_subject_ref'), 'subject_requests',
                    ['subject_ref'], unique=False)
    op.create_index('ix_subject_requests_status', 'subject_requests', ['status', 'deadline'],
                    unique=False)
    op.create_table('consent_asks',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('subject_ref', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('notice_version', sa.String(length=64), nullable=False),
    sa.Column('notice_hash', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('consent_id', sa.String(length=36), nullable=True),
    sa.Column('asked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_asks'))
    )
    op.create_index(op.f('ix_consent_asks_subject_ref'), 'consent_asks', ['subject_ref'],
                    unique=False)
    op.create_index('ix_consent_asks_notice', 'consent_asks', ['notice_version', 'channel'],
                    unique=False)
    op.create_table('corrected_values',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('field', sa.String(length=16), nullable=False),
    sa.Column('old_ct', sa.LargeBinary(), nullable=True),
    sa.Column('corrected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_corrected_values'))
    )
    op.create_index(op.f('ix_corrected_values_applicant_ref'), 'corrected_values',
                    ['applicant_ref'], unique=False)


def downgrade() -> None:
    op.drop_table('corrected_values')
    op.drop_index('ix_consent_asks_notice', table_name='consent_asks')
    op.drop_index(op.f('ix_consent_asks_subject_ref'), table_name='consent_asks')
    op.drop_table('consent_asks')
    op.drop_index('ix_subject_requests_status', table_name='subject_requests')
    op.drop_index(op.f('ix_subject_requests_subject_ref'), table_name='subject_requests')
    op.drop_table('subject_requests')
