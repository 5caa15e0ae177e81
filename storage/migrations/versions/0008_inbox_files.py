"""inbox files: batch files taken from the inbox, by content hash

Revision ID: 0008_inbox
Revises: 0007_run_status
Create Date: 2026-12-03 10:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_inbox'
down_revision = '0007_run_status'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbox_files',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=100), nullable=True),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('moved_to', sa.String(length=255), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_inbox_files'))
    )


def downgrade() -> None:
    op.drop_table('inbox_files')
