"""blind indexes cut to 20 bits; the bound phone sealed; who withdrew a consent, and how

Revision ID: 0015_blind_index
Revises: 0012_chain
Create Date: 2026-12-03 14:00:00

The applicants' ID-number and phone indexes and the OAuth accounts' bound-phone index are cut
to their first 20 bits (`storage.applicant_fields`). A stored index is the hex of an
HMAC-SHA256, and the truncated index of a value is the first five hex digits of its full one,
so this needs no key: `substr(x, 1, 5)` in SQL, on SQLite and PostgreSQL alike. Lookups then
take the index as a list of candidates and decrypt each to compare.

`oauth_accounts.phone_ct` holds a bound phone sealed beside its index, so that a match is
confirmed by decryption; phones bound before stay judged by the index alone.
`consent_events.actor` and `.via` record who withdrew and through which surface; the event's
hash covers them when they are set, so events recorded before still verify.

Downgrade drops the new columns. It cannot lengthen the indexes again (that needs every
value and the key): an older idv would find nobody by them.
"""

from alembic import op
import sqlalchemy as sa


revision = '0015_blind_index'
down_revision = '0012_chain'
branch_labels = None
depends_on = None

# Five hex digits: 20 bits (`storage.applicant_fields.ID_NUMBER_INDEX_BITS`, `PHONE_INDEX_BITS`).
HEX_DIGITS = 5
INDEXES = (('applicants', 'id_number_bidx'), ('applicants', 'phone_bidx'),
           ('oauth_accounts', 'phone_bidx'))


def upgrade() -> None:
    with op.batch_alter_table('consent_events') as b:
        b.add_column(sa.Column('actor', sa.String(length=128), nullable=True))
        b.add_column(sa.Column('via', sa.String(length=16), nullable=True))
    with op.batch_alter_table('oauth_accounts') as b:
        b.add_column(sa.Column('phone_ct', sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    for table, column in INDEXES:
        t = sa.table(table, sa.column(column, sa.String))
        c = t.c[column]
        conn.execute(sa.update(t).where(sa.func.length(c) > HEX_DIGITS)
                     .values({column: sa.func.substr(c, 1, HEX_DIGITS)}))


def downgrade() -> None:
    with op.batch_alter_table('oauth_accounts') as b:
        b.drop_column('phone_ct')
    with op.batch_alter_table('consent_events') as b:
        b.drop_column('via')
        b.drop_column('actor')
