"""court list copy: sources, versions, the changes between versions, the matches a re-screen
found (sealed), and the re-screen runs

Revision ID: 0022_court_list
Revises: 0021_people_bindings
Create Date: 2026-12-10 09:00:00

Each version's rows live in a table of their own, `court_list_rows_<version id>`, created by
the import (`storage.court_copy`) and dropped when two newer versions are live: data, not
schema, as a search index's generations are.
"""

from alembic import op
import sqlalchemy as sa


revision = '0022_court_list'
down_revision = '0021_people_bindings'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('court_list_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('base_version', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('table_name', sa.String(length=64), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=True),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('persons', sa.Integer(), nullable=False),
    sa.Column('organisations', sa.Integer(), nullable=False),
    sa.Column('listed', sa.Integer(), nullable=False),
    sa.Column('delisted', sa.Integer(), nullable=False),
    sa.Column('shapes', sa.JSON(), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.String(length=300), nullable=True),
    sa.CheckConstraint("kind IN ('full', 'delta')", name=op.f('ck_court_list_versions_kind')),
    sa.CheckConstraint("status IN ('building', 'live', 'superseded', 'dropped', 'failed')",
                       name=op.f('ck_court_list_versions_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_court_list_versions')),
    sa.UniqueConstraint('source', 'version', name=op.f('uq_court_list_versions_source')),
    )
    op.create_table('court_list_sources',
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('current_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['current_id'], ['court_list_versions.id'],
                            name=op.f('fk_court_list_sources_current_id_court_list_versions')),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_court_list_sources')),
    )
    op.create_table('court_list_changes',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('entry_key', sa.String(length=32), nullable=False),
    sa.Column('change', sa.String(length=10), nullable=False),
    sa.CheckConstraint("change IN ('listed', 'delisted', 'replaced')",
                       name=op.f('ck_court_list_changes_change')),
    sa.ForeignKeyConstraint(['version_id'], ['court_list_versions.id'],
                            name=op.f('fk_court_list_changes_version_id_court_list_versions'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'entry_key', name=op.f('pk_court_list_changes')),
    )
    op.create_table('court_matches',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('applicant_id', sa.String(length=36), nullable=False),
    sa.Column('entry_bidx', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detail_ct', sa.LargeBinary(), nullable=True),
    sa.Column('found_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('found_run', sa.String(length=36), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_run', sa.String(length=36), nullable=True),
    sa.Column('case_id', sa.String(length=36), nullable=True),
    sa.CheckConstraint("status IN ('active', 'whitelisted', 'delisted', 'cleared')",
                       name=op.f('ck_court_matches_status')),
    # A match goes with its applicant's row (the retention purge of a decision).
    sa.ForeignKeyConstraint(['applicant_id'], ['applicants.id'],
                            name=op.f('fk_court_matches_applicant_id_applicants'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_court_matches')),
    )
    op.create_index(op.f('ix_court_matches_applicant_id'), 'court_matches', ['applicant_id'])
    op.create_index(op.f('ix_court_matches_entry_bidx'), 'court_matches', ['entry_bidx'])
    op.create_table('rescreen_runs',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('versions', sa.JSON(), nullable=False),
    sa.Column('chunks', sa.JSON(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('stop_reason', sa.String(length=300), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('running', 'finished', 'stopped', 'failed')",
                       name=op.f('ck_rescreen_runs_status')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                            name=op.f('fk_rescreen_runs_run_id_runs')),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_rescreen_runs')),
    )


def downgrade() -> None:
    conn = op.get_bind()
    for (name,) in conn.execute(sa.text('SELECT table_name FROM court_list_versions')):
        op.execute(f'DROP TABLE IF EXISTS "{name}"')
    op.drop_table('rescreen_runs')
    op.drop_index(op.f('ix_court_matches_entry_bidx'), table_name='court_matches')
    op.drop_index(op.f('ix_court_matches_applicant_id'), table_name='court_matches')
    op.drop_table('court_matches')
    op.drop_table('court_list_changes')
    op.drop_table('court_list_sources')
    op.drop_table('court_list_versions')
