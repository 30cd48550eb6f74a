"""groups: the capacity queue's settings — how long a request waits for a full model, the group's priority;
request_logs: how long each request waited in that queue

Revision ID: 0008q
Revises: 0011r
Create Date: 2026-12-04 03:50:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008q'
down_revision = '0011r'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_seconds', sa.Integer(), server_default='10', nullable=False))
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('request_logs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_ms', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('request_logs', schema=None) as batch_op:
        batch_op.drop_column('queue_ms')
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.drop_column('priority')
        batch_op.drop_column('queue_seconds')
