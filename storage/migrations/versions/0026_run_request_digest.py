"""runs: an on-demand request's body as a keyed digest, so that its idempotency key replays
only for the same body

Revision ID: 0026_run_request_digest
Revises: 0025_applicant_portal
Create Date: 2026-12-07 19:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0026_run_request_digest'
down_revision = '0025_applicant_portal'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('request_digest')
