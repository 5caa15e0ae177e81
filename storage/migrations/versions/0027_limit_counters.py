"""limit_counters: the vendor limits' per-person caps and spend ceilings in the database,
shared by every process when no Redis is configured

Revision ID: 0027_limit_counters
Revises: 0026_run_request_digest
Create Date: 2026-12-07 21:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0027_limit_counters'
down_revision = '0026_run_request_digest'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('limit_counters',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('person', sa.String(length=16), nullable=True),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_limit_counters')),
    )
    op.create_index(op.f('ix_limit_counters_person'), 'limit_counters', ['person'], unique=False)
    op.create_index(op.f('ix_limit_counters_expires_at'), 'limit_counters', ['expires_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_limit_counters_expires_at'), table_name='limit_counters')
    op.drop_index(op.f('ix_limit_counters_person'), table_name='limit_counters')
    op.drop_table('limit_counters')
