"""four eyes: the second person's reason, when they confirm or send a proposal back

Revision ID: 0019_second_reason
Revises: 0018_reveals
Create Date: 2026-12-07 12:00:00

`case_decisions.second_reason_ct`: sealed under the subject's key as the proposer's reason
is. A decision may now be `sent_back` (the second person refused it, with a reason).
"""

from alembic import op
import sqlalchemy as sa


revision = '0019_second_reason'
down_revision = '0018_reveals'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('case_decisions') as b:
        b.add_column(sa.Column('second_reason_ct', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('case_decisions') as b:
        b.drop_column('second_reason_ct')
