"""OAuth states and authorized accounts

Revision ID: 0005_oauth
Revises: 0004_risk
Create Date: 2026-12-01 17:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005_oauth'
down_revision = '0004_risk'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('oauth_states',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('state_hash', sa.String(length=64), nullable=False),
    sa.Column('browser_hash', sa.String(length=64), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False),
    sa.Column('verifier_ct', sa.LargeBinary(), nullable=True),
    sa.Column('nonce_ct', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_states')),
    sa.UniqueConstraint('state_hash', name=op.f('uq_oauth_states_state_hash'))
    )
    op.create_table('oauth_accounts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False),
    sa.Column('consent_id', sa.String(length=36), nullable=True),
    sa.Column('subject_bidx', sa.String(length=64), nullable=True),
    sa.Column('union_bidx', sa.String(length=64), nullable=True),
    sa.Column('phone_bidx', sa.String(length=64), nullable=True),
    sa.Column('access_token_ct', sa.LargeBinary(), nullable=True),
    sa.Column('refresh_token_ct', sa.LargeBinary(), nullable=True),
    sa.Column('access_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refresh_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('account_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refreshed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_accounts')),
    sa.UniqueConstraint('applicant_ref', 'provider',
                        name=op.f('uq_oauth_accounts_applicant_ref'))
    )
    op.create_index(op.f('ix_oauth_accounts_applicant_ref'), 'oauth_accounts',
                    ['applicant_ref'], unique=False)
    op.create_index(op.f('ix_oauth_accounts_subject_bidx'), 'oauth_accounts',
                    ['subject_bidx'], unique=False)
    op.create_index(op.f('ix_oauth_accounts_union_bidx'), 'oauth_accounts',
                    ['union_bidx'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_oauth_accounts_union_bidx'), table_name='oauth_accounts')
    op.drop_index(op.f('ix_oauth_accounts_subject_bidx'), table_name='oauth_accounts')
    op.drop_index(op.f('ix_oauth_accounts_applicant_ref'), table_name='oauth_accounts')
    op.drop_table('oauth_accounts')
    op.drop_table('oauth_states')
