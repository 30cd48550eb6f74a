"""api keys remember who disabled them, so an operator's decision is not undone by the key's owner

Revision ID: 0004s
Revises: 0003r
Create Date: 2026-12-03 19:10:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0004s'
down_revision = '0003r'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_by', sa.String(length=16), nullable=True))
    # Keys disabled before this revision: who did it is in the audit log, not here. They are read as
    # the owner's, the behaviour they had until now.
    op.execute("UPDATE api_keys SET disabled_by = 'owner' WHERE status = 'disabled'")


def downgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('disabled_by')
