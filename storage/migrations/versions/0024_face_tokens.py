"""face tokens: every hosted face flow's token, recorded when it starts, with its verdict's
text results once pulled and its deletion at the vendor

Revision ID: 0024_face_tokens
Revises: 0023_case_and_hold_bindings
Create Date: 2026-12-07 14:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0024_face_tokens'
down_revision = '0023_case_and_hold_bindings'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('face_tokens',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('vendor', sa.String(length=40), nullable=False),
    sa.Column('protocol', sa.String(length=16), nullable=False),
    sa.Column('vendor_token', sa.String(length=128), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('decision_id', sa.String(length=36), nullable=False),
    sa.Column('consent_id', sa.String(length=36), nullable=False),
    sa.Column('start_request_id', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('redirected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pulled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pulled_by', sa.String(length=16), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.String(length=80), nullable=True),
    sa.Column('code', sa.String(length=16), nullable=True),
    sa.Column('fee_cents', sa.Integer(), nullable=False),
    sa.Column('result_request_id', sa.String(length=128), nullable=True),
    sa.Column('signals', sa.JSON(), nullable=False),
    sa.Column('pull_attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=80), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deletion', sa.String(length=80), nullable=True),
    sa.CheckConstraint("status IN ('open', 'final', 'expired', 'lost')",
                       name=op.f('ck_face_tokens_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_face_tokens')),
    sa.UniqueConstraint('vendor', 'vendor_token', name=op.f('uq_face_tokens_vendor')),
    )
    op.create_index(op.f('ix_face_tokens_applicant_ref'), 'face_tokens', ['applicant_ref'],
                    unique=False)
    op.create_index('ix_face_tokens_status', 'face_tokens', ['status', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_face_tokens_status', table_name='face_tokens')
    op.drop_index(op.f('ix_face_tokens_applicant_ref'), table_name='face_tokens')
    op.drop_table('face_tokens')
