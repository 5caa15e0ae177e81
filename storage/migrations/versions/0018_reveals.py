"""reveals: every unmasked value shown, through either surface, in one table

Revision ID: 0018_reveals
Revises: 0017_request_cases
Create Date: 2026-12-07 11:00:00

`case_reveals` becomes `reveals`: a reveal names its subject, and the case it was shown on
only when there was one (`idv subject reveal` has none). Rows from before name the subject of
their case. Both surfaces' reveals now count against the one daily limit.
"""

from alembic import op
import sqlalchemy as sa


revision = '0018_reveals'
down_revision = '0017_request_cases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_case_reveals_actor_at', table_name='case_reveals')
    op.rename_table('case_reveals', 'reveals')
    with op.batch_alter_table('reveals') as b:
        b.add_column(sa.Column('subject_ref', sa.String(length=64), nullable=True))
        b.alter_column('case_id', existing_type=sa.String(length=36), nullable=True)
    op.execute(
        "UPDATE reveals SET subject_ref = (SELECT a.applicant_ref FROM review_cases c "
        "JOIN applicants a ON a.id = c.applicant_id WHERE c.id = reveals.case_id)")
    op.execute("UPDATE reveals SET subject_ref = '' WHERE subject_ref IS NULL")
    with op.batch_alter_table('reveals') as b:
        b.alter_column('subject_ref', existing_type=sa.String(length=64), nullable=False)
    op.create_index('ix_reveals_actor_at', 'reveals', ['actor', 'at'])


def downgrade() -> None:
    op.drop_index('ix_reveals_actor_at', table_name='reveals')
    op.execute("DELETE FROM reveals WHERE case_id IS NULL")
    with op.batch_alter_table('reveals') as b:
        b.drop_column('subject_ref')
        b.alter_column('case_id', existing_type=sa.String(length=36), nullable=False)
    op.rename_table('reveals', 'case_reveals')
    op.create_index('ix_case_reveals_actor_at', 'case_reveals', ['actor', 'at'])
