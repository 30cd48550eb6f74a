"""request_logs: drop the single-column user_id index; (user_id, started_at) serves every lookup by user

Every index is written once per ingested request; this one duplicated the leading column of
ix_request_logs_user_started.

Revision ID: 0006i
Revises: 0005t
Create Date: 2026-12-03 20:25:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006i'
down_revision = '0005t'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('request_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_request_logs_user_id')


def downgrade():
    with op.batch_alter_table('request_logs', schema=None) as batch_op:
        batch_op.create_index('ix_request_logs_user_id', ['user_id'], unique=False)
