"""deployments name the driver doing their current change (a deploy or an undeploy)

The reconciler asks the cluster about it: a deployment stuck in ``deploying`` or
``deleting`` whose driver has ended (or was lost with a Ray head restart) is settled from
what Serve runs.

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ray_submission_id', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_column('ray_submission_id')
