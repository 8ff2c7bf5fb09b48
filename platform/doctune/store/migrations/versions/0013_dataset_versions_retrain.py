"""dataset versions, and the retrain policies of deployments

- ``dataset_versions``: one row per version of a dataset (version 1 is the upload, each append adds
  the next), with its counts, label distribution and drift in ``info``. Every dataset stored before
  gets its version 1, made from its info.
- ``datasets.version``: the dataset's newest version (1 for every dataset stored before).
- ``deployments.retrain_state``: a retrain policy's bookkeeping (the retrain job under way, when its
  schedule last fired); the policy itself is the DeploymentSpec's ``retrain``.
- ``retrain_events``: every decision of a retrain policy (triggered, skipped, promoted, refused, failed).

Revision ID: 0013
Revises: 0012
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    op.create_table('dataset_versions',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dataset_id', 'version', name='uq_dataset_versions_version')
    )
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_versions_dataset_id'), ['dataset_id'], unique=False)
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retrain_state', sa.JSON(), nullable=True))
    op.create_table('retrain_events',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('deployment_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('retrain_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrain_events_deployment_id'), ['deployment_id'], unique=False)
    _first_versions()


def _first_versions() -> None:
    """Version 1 of every dataset stored before: its info as it is, plus what a version records."""
    datasets = sa.table('datasets', sa.column('id', sa.String), sa.column('uri', sa.Text), sa.column('info', sa.JSON),
                        sa.column('created_at', sa.DateTime(timezone=True)))
    versions = sa.table('dataset_versions', sa.column('dataset_id', sa.String), sa.column('version', sa.Integer),
                        sa.column('info', sa.JSON), sa.column('created_at', sa.DateTime(timezone=True)))
    conn = op.get_bind()
    rows = []
    for dataset_id, uri, info, created_at in conn.execute(sa.select(datasets.c.id, datasets.c.uri, datasets.c.info,
                                                                    datasets.c.created_at)):
        info = dict(info or {})
        sizes = info.get('sizes') or {}
        rows.append({'dataset_id': dataset_id, 'version': 1, 'created_at': created_at or datetime.now(timezone.utc),
                     'info': {**info, 'version': 1, 'uri': uri, 'added': dict(sizes), 'duplicates': 0,
                              'records': sum(v for v in sizes.values() if isinstance(v, int))}})
    if rows:
        op.bulk_insert(versions, rows)


def downgrade() -> None:
    with op.batch_alter_table('retrain_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrain_events_deployment_id'))
    op.drop_table('retrain_events')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_column('retrain_state')
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_versions_dataset_id'))
    op.drop_table('dataset_versions')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('version')
