"""an index over each tenant's jobs in the listing's order

``ix_jobs_tenant_listing`` on ``jobs (tenant_id, created_at DESC, id DESC)``: ``GET /v1/jobs`` (the CLI's
``jobs list``, the console's jobs page) reads a tenant's newest jobs a page at a time, keyset-paged on
(created_at, id) (see doctune.services.tenants.list_owned); without it every page sorted all of the
tenant's jobs, and the API-load bench's read p99 grew with the number of jobs.

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_tenant_listing', ['tenant_id', sa.text('created_at DESC'), sa.text('id DESC')],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_tenant_listing')
