"""applicant portal: one session per applicant ref and journey, and the one-time links into it

Revision ID: 0025_applicant_portal
Revises: 0024_face_tokens
Create Date: 2026-12-07 17:45:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0025_applicant_portal'
down_revision = '0024_face_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('applicant_sessions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('applicant_ref', sa.String(length=64), nullable=False),
    sa.Column('journey', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=False),
    sa.Column('return_url', sa.String(length=2048), nullable=True),
    sa.Column('cookie_sha256', sa.String(length=64), nullable=True),
    sa.Column('cookie_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('open', 'done')", name=op.f('ck_applicant_sessions_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_applicant_sessions')),
    sa.UniqueConstraint('applicant_ref', 'journey',
                        name=op.f('uq_applicant_sessions_applicant_ref')),
    sa.UniqueConstraint('cookie_sha256', name=op.f('uq_applicant_sessions_cookie_sha256')),
    )
    op.create_index(op.f('ix_applicant_sessions_applicant_ref'), 'applicant_sessions',
                    ['applicant_ref'], unique=False)
    op.create_table('applicant_links',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('session_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['applicant_sessions.id'],
                            name=op.f('fk_applicant_links_session_id_applicant_sessions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_applicant_links')),
    )
    op.create_index(op.f('ix_applicant_links_session_id'), 'applicant_links', ['session_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_applicant_links_session_id'), table_name='applicant_links')
    op.drop_table('applicant_links')
    op.drop_index(op.f('ix_applicant_sessions_applicant_ref'), table_name='applicant_sessions')
    op.drop_table('applicant_sessions')
