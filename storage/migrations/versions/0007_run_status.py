"""runs: status, the process that runs it and its heartbeat, and the run it resumes

Revision ID: 0007_run_status
Revises: 0006_billing
Create Date: 2026-12-02 18:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007_run_status'
down_revision = '0006_billing'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False,
                                      server_default='running'))
        batch_op.add_column(sa.Column('owner', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('resumes', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_runs_batch_sha256'), ['batch_sha256'],
                              unique=False)
    # Runs that finished before this revision are finished.
    op.execute("UPDATE runs SET status = 'finished' WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_batch_sha256'))
        batch_op.drop_column('resumes')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('owner')
        batch_op.drop_column('status')
