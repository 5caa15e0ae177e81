"""step results: the vendor call's idempotency key, for reconciling vendor bills

Revision ID: 0006_billing
Revises: 0005_oauth
Create Date: 2026-12-01 23:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_billing'
down_revision = '0005_oauth'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('step_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_step_results_idempotency_key'),
                              ['idempotency_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('step_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_step_results_idempotency_key'))
        batch_op.drop_column('idempotency_key')
