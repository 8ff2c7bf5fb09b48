"""deployment revisions: every deploy, promotion and rollback appends one; one deployment per tenant and name

Deployments made before this migration get their current model and settings as
revision 1, so a rollback finds the history it expects.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deployment_revisions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('deployment_id', sa.String(length=64), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('decision', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('deployment_id', 'revision', name='uq_deployment_revisions_revision')
    )
    with op.batch_alter_table('deployment_revisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployment_revisions_deployment_id'), ['deployment_id'], unique=False)

    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.Integer(), server_default='1', nullable=False))
        # a name was always updated in place, so existing rows are unique already; now two racing
        # first deploys of one name cannot both be recorded
        batch_op.create_unique_constraint('uq_deployments_tenant_name', ['tenant_id', 'name'])

    op.execute(
        "INSERT INTO deployment_revisions (deployment_id, revision, model_id, spec, reason, decision, created_at) "
        "SELECT id, 1, model_id, spec, 'recorded when revisions were introduced', NULL, created_at FROM deployments"
    )


def downgrade() -> None:
    with op.batch_alter_table('deployment_revisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployment_revisions_deployment_id'))

    op.drop_table('deployment_revisions')

    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_constraint('uq_deployments_tenant_name', type_='unique')
        batch_op.drop_column('revision')
