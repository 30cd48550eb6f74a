"""model_routes: each model's selection strategy, and aliases that stand for a list of models

Revision ID: 0011r
Revises: 0008s
Create Date: 2026-12-04 03:40:00.000000

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0011r'
down_revision = '0008s'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'model_routes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=False),
        sa.Column('strategy', sa.String(length=16), nullable=False),
        sa.Column('targets', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('model', name='uq_model_routes_model'),
    )


def downgrade():
    op.drop_table('model_routes')
