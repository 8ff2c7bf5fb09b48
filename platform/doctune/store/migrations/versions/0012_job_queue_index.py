"""an index over each tenant's queue in the dispatcher's order

``ix_jobs_queue`` on ``jobs (status, tenant_id, priority DESC, created_at, id)``: the dispatcher
reads only the first few queued jobs of each tenant (its queue heads), each an index range
read, instead of every queued job (see doctune.services.scheduler).

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_queue', ['status', 'tenant_id', sa.text('priority DESC'), 'created_at', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_queue')
