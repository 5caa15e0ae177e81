"""people bound to the audit chain: users and credentials carry the sequence number of the
audit event holding their hash

Revision ID: 0021_people_bindings
Revises: 0020_status_checks
Create Date: 2026-12-07 13:00:00

Rows from before have none; the first store opened with the key ring after this revision
binds them once (`PeopleRepository.bind_existing`, audited as `people.bound`), and from then
on a row without a binding stands for nobody.
"""

from alembic import op
import sqlalchemy as sa


revision = '0021_people_bindings'
down_revision = '0020_status_checks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('users', 'credentials'):
        with op.batch_alter_table(table) as b:
            b.add_column(sa.Column('audit_seq', sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ('users', 'credentials'):
        with op.batch_alter_table(table) as b:
            b.drop_column('audit_seq')
