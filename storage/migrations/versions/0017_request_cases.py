"""subject requests tracked as review cases: the case each request opened or joined

Revision ID: 0017_request_cases
Revises: 0015_blind_index
Create Date: 2026-12-03 14:00:00

Requests opened before this revision have no case (`case_id` NULL); they stay tracked by
their own deadline in `idv requests list`.
"""

from alembic import op
import sqlalchemy as sa


revision = '0017_request_cases'
down_revision = '0015_blind_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subject_requests') as b:
        b.add_column(sa.Column('case_id', sa.String(length=36), nullable=True))
        b.create_index('ix_subject_requests_case_id', ['case_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('subject_requests') as b:
        b.drop_index('ix_subject_requests_case_id')
        b.drop_column('case_id')
