"""run chunks: each chunk of a run as a unit of work, its attempt, worker and heartbeat

Revision ID: 0009_run_chunks
Revises: 0008_inbox
Create Date: 2026-12-03 10:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0009_run_chunks'
down_revision = '0008_inbox'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_chunks',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('chunk_index', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('flow_run_id', sa.String(length=36), nullable=True),
    sa.Column('owner', sa.String(length=160), nullable=True),
    sa.Column('worker', sa.String(length=160), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                            name=op.f('fk_run_chunks_run_id_runs')),
    sa.PrimaryKeyConstraint('run_id', 'chunk_index', name=op.f('pk_run_chunks'))
    )


def downgrade() -> None:
    op.drop_table('run_chunks')
