"""a tenant's dedicated Ray cluster, and the cluster each job and sweep was submitted to

- ``ray_clusters``: a tenant's Ray head (its Jobs API address) and Ray auth token, registered by
  an admin or the operator; a replaced or removed one is retired (``retired_at``), not deleted.
- ``jobs.ray_cluster_id`` and ``sweeps.ray_cluster_id``: where the current driver runs (NULL: the
  shared cluster), so status, logs, cancel and pause reach it after the tenant's cluster changes.

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ray_clusters',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.String(length=63), nullable=False),
    sa.Column('address', sa.String(length=300), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ray_clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ray_clusters_tenant_id'), ['tenant_id'], unique=False)
    for table in ('jobs', 'sweeps'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('ray_cluster_id', sa.String(length=64), nullable=True))
            batch_op.create_foreign_key(f'fk_{table}_ray_cluster_id_ray_clusters', 'ray_clusters',
                                        ['ray_cluster_id'], ['id'])


def downgrade() -> None:
    for table in ('sweeps', 'jobs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'fk_{table}_ray_cluster_id_ray_clusters', type_='foreignkey')
            batch_op.drop_column('ray_cluster_id')
    with op.batch_alter_table('ray_clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ray_clusters_tenant_id'))
    op.drop_table('ray_clusters')
