"""audit chain: public links for checkpoints, a purge base, records bound to their events

Revision ID: 0012_chain
Revises: 0011_cases
Create Date: 2026-12-03 11:00:00

Events already written get their link here (it is unkeyed: SHA-256 over each event's
content and the link before it), so the chain verifies and checkpoints sign it from now on.
Records written before this revision carry no binding (`audit_seq` NULL): the gate treats
such a grant as no consent and `idv audit verify` names it, so a database that holds live
consents from before must have them granted again (there is no way to bind them later that
an attacker with write access could not use too).
"""

from alembic import op
import sqlalchemy as sa

from storage.audit import GENESIS, event_body, next_link


revision = '0012_chain'
down_revision = '0011_cases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events') as b:
        b.add_column(sa.Column('link', sa.String(length=64), nullable=True))
    with op.batch_alter_table('audit_head') as b:
        b.add_column(sa.Column('link', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('base_seq', sa.Integer(), nullable=False, server_default='0'))
        b.add_column(sa.Column('base_hash', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('base_link', sa.String(length=64), nullable=True))
        b.add_column(sa.Column('checkpoint_seq', sa.Integer(), nullable=False,
                               server_default='0'))
    with op.batch_alter_table('consent_events') as b:
        b.add_column(sa.Column('audit_seq', sa.Integer(), nullable=True))
    with op.batch_alter_table('applicants') as b:
        b.add_column(sa.Column('decision_seq', sa.Integer(), nullable=True))
    with op.batch_alter_table('step_results') as b:
        b.add_column(sa.Column('audit_seq', sa.Integer(), nullable=True))

    conn = op.get_bind()
    ae = sa.table('audit_events', sa.column('seq', sa.Integer), sa.column('at', sa.DateTime),
                  sa.column('kind', sa.String), sa.column('subject_ref', sa.String),
                  sa.column('detail', sa.JSON), sa.column('link', sa.String))
    link = GENESIS
    updates = []
    for row in conn.execute(sa.select(ae.c.seq, ae.c.at, ae.c.kind, ae.c.subject_ref,
                                      ae.c.detail).order_by(ae.c.seq)):
        link = next_link(link, event_body(row.seq, row.at, row.kind, row.subject_ref,
                                          row.detail))
        updates.append({"s": row.seq, "l": link})
        if len(updates) >= 1000:
            conn.execute(sa.update(ae).where(ae.c.seq == sa.bindparam("s"))
                         .values(link=sa.bindparam("l")), updates)
            updates = []
    if updates:
        conn.execute(sa.update(ae).where(ae.c.seq == sa.bindparam("s"))
                     .values(link=sa.bindparam("l")), updates)
    conn.execute(sa.text("UPDATE audit_head SET link = :l WHERE id = 1"), {"l": link})


def downgrade() -> None:
    for table, cols in (('step_results', ['audit_seq']), ('applicants', ['decision_seq']),
                        ('consent_events', ['audit_seq']),
                        ('audit_head', ['checkpoint_seq', 'base_link', 'base_hash',
                                        'base_seq', 'link']),
                        ('audit_events', ['link'])):
        with op.batch_alter_table(table) as b:
            for col in cols:
                b.drop_column(col)
