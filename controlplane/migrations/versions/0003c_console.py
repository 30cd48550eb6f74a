"""console

Revision ID: 0003c
Revises: 0003a
Create Date: 2026-11-23 14:44:44.361651

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0003c'
down_revision = '0003a'
branch_labels = None
depends_on = None


def upgrade():

    op.create_table('channel_rollups',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('bucket', sa.DateTime(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('errors', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('reasoning_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost', sa.BigInteger(), nullable=False),
    sa.Column('upstream_cost', sa.BigInteger(), nullable=False),
    sa.Column('latency_hist', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('ttft_hist', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bucket', 'model', 'channel_id', name='uq_channel_rollups_dims')
    )
    with op.batch_alter_table('channel_rollups', schema=None) as batch_op:
        batch_op.create_index('ix_channel_rollups_bucket', ['bucket'], unique=False)

    op.create_table('operator_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('operator_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_operator_tokens_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_target', ['target_type', 'target_id'], unique=False)

    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cost_bp', sa.Integer(), nullable=True))

    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_refunds_topup_entry', ['topup_entry_id'])

    with op.batch_alter_table('request_logs', schema=None) as batch_op:
        batch_op.create_index('ix_request_logs_user_started', ['user_id', 'started_at'], unique=False)




def downgrade():

    with op.batch_alter_table('request_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_request_logs_user_started')

    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_constraint('uq_refunds_topup_entry', type_='unique')

    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('cost_bp')

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_target')

    with op.batch_alter_table('operator_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_operator_tokens_user_id'))

    op.drop_table('operator_tokens')
    with op.batch_alter_table('channel_rollups', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_rollups_bucket')

    op.drop_table('channel_rollups')

