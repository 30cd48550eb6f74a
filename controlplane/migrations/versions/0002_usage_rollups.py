"""usage rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:06:15.418333

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():

    op.create_table('usage_rollups',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('bucket', sa.DateTime(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('api_key_id', sa.Integer(), nullable=False),
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
    sa.UniqueConstraint('bucket', 'account_id', 'api_key_id', 'model', 'channel_id', name='uq_usage_rollups_dims')
    )
    with op.batch_alter_table('usage_rollups', schema=None) as batch_op:
        batch_op.create_index('ix_usage_rollups_account_bucket', ['account_id', 'bucket'], unique=False)
        batch_op.create_index('ix_usage_rollups_bucket', ['bucket'], unique=False)




def downgrade():

    with op.batch_alter_table('usage_rollups', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_rollups_bucket')
        batch_op.drop_index('ix_usage_rollups_account_bucket')

    op.drop_table('usage_rollups')

