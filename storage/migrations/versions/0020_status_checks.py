"""status sets as check constraints: a case's status and queue, a decision's status, a
subject request's status hold one of `policies.vocabulary`'s values

Revision ID: 0020_status_checks
Revises: 0019_second_reason
Create Date: 2026-12-07 12:30:00
"""

from alembic import op


revision = '0020_status_checks'
down_revision = '0019_second_reason'
branch_labels = None
depends_on = None

# Written out as they stand today: a revision does not move when the vocabulary does.
CHECKS = {
    ('review_cases', 'status'): ('open', 'waiting', 'pending_confirmation', 'closed',
                                 'closed_erased'),
    ('review_cases', 'queue'): ('analyst', 'supervisor'),
    ('case_decisions', 'status'): ('done', 'pending', 'confirmed', 'sent_back', 'voided'),
    ('subject_requests', 'status'): ('open', 'answered'),
}


def upgrade() -> None:
    for (table, column), values in CHECKS.items():
        listed = ', '.join(f"'{v}'" for v in values)
        with op.batch_alter_table(table) as b:
            b.create_check_constraint(op.f(f'ck_{table}_{column}'), f'{column} IN ({listed})')


def downgrade() -> None:
    for table, column in CHECKS:
        with op.batch_alter_table(table) as b:
            b.drop_constraint(op.f(f'ck_{table}_{column}'), type_='check')
