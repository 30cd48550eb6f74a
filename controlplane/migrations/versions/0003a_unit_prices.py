"""unit prices: per image (by size/quality), per 1M characters, per minute of audio

Revision ID: 0003a
Revises: 0003u
Create Date: 2026-11-23 14:17:53.803535

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0003a'
down_revision = '0003u'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('model_prices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('per_image', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('image_prices', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('per_1m_chars', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('per_minute_audio', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('model_prices', schema=None) as batch_op:
        batch_op.drop_column('per_minute_audio')
        batch_op.drop_column('per_1m_chars')
        batch_op.drop_column('image_prices')
        batch_op.drop_column('per_image')
