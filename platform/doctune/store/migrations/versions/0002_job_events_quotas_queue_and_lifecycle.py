"""job events, quotas, queue and lifecycle

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dispatch_lock',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(sa.table('dispatch_lock', sa.column('id', sa.Integer())), [{'id': 1}])
    op.create_table('job_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_events_job_id'), ['job_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('control', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('resume_from', sa.Text(), nullable=True))

    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weight', sa.Float(), server_default='1.0', nullable=False))
        batch_op.add_column(sa.Column('max_concurrent_jobs', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_cpus', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('max_gpus', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('max_storage_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('max_deployments', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('max_deployments')
        batch_op.drop_column('max_storage_bytes')
        batch_op.drop_column('max_gpus')
        batch_op.drop_column('max_cpus')
        batch_op.drop_column('max_concurrent_jobs')
        batch_op.drop_column('weight')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('resume_from')
        batch_op.drop_column('control')
        batch_op.drop_column('attempt')
        batch_op.drop_column('priority')

    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_events_job_id'))

    op.drop_table('job_events')
    op.drop_table('dispatch_lock')
