"""routing, health and limits: rate limits on keys and users, upstream capacity and
probe state on channels and their keys, the notification outbox on channel events

Revision ID: 0003r
Revises: 0003c
Create Date: 2026-11-23 14:19:40.177764

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003r'
down_revision = '0003c'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('tpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('concurrency', sa.Integer(), nullable=True))

    with op.batch_alter_table('channel_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notified_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('channel_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('probe_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('probe_passes', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('probed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('probe_latency_ms', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('probe_message', sa.Text(), nullable=True))

    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('tpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('concurrency', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('key_rpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('key_tpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('key_concurrency', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('probe_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('probe_passes', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('probed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('probe_latency_ms', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('probe_message', sa.Text(), nullable=True))

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('tpm', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('concurrency', sa.Integer(), nullable=True))



def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('concurrency')
        batch_op.drop_column('tpm')
        batch_op.drop_column('rpm')

    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('probe_message')
        batch_op.drop_column('probe_latency_ms')
        batch_op.drop_column('probed_at')
        batch_op.drop_column('probe_passes')
        batch_op.drop_column('probe_failures')
        batch_op.drop_column('key_concurrency')
        batch_op.drop_column('key_tpm')
        batch_op.drop_column('key_rpm')
        batch_op.drop_column('concurrency')
        batch_op.drop_column('tpm')
        batch_op.drop_column('rpm')

    with op.batch_alter_table('channel_keys', schema=None) as batch_op:
        batch_op.drop_column('probe_message')
        batch_op.drop_column('probe_latency_ms')
        batch_op.drop_column('probed_at')
        batch_op.drop_column('probe_passes')
        batch_op.drop_column('probe_failures')

    with op.batch_alter_table('channel_events', schema=None) as batch_op:
        batch_op.drop_column('notified_at')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('concurrency')
        batch_op.drop_column('tpm')
        batch_op.drop_column('rpm')

