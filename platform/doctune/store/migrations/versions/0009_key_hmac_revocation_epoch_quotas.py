"""API keys hashed with HMAC-SHA256, a revocation epoch, and quotas on queued jobs and keys

- ``api_keys.hash_scheme``: "hmac-sha256" for keys issued from now on; existing rows are
  "scrypt" and keep verifying (each is re-hashed with HMAC the first time it is used).
- ``platform_secrets``: the HMAC secret when no DOCTUNE_KEY_SECRET is set (made here, random).
- ``key_revocations``: one row whose ``epoch`` every revocation bumps; API processes and endpoint
  replicas re-read it at most every second and drop the keys they cached when it changes.
- ``tenants.max_queued_jobs`` and ``tenants.max_keys``: quotas (NULL: unlimited).

Revision ID: 0009
Revises: 0008
"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hash_scheme', sa.String(length=16), server_default='scrypt', nullable=False))
    secrets_table = op.create_table('platform_secrets',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    revocations = op.create_table('key_revocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(secrets_table, [{"name": "api_key_hmac", "value": secrets.token_hex(32)}])
    op.bulk_insert(revocations, [{"id": 1, "epoch": 0}])
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_queued_jobs', sa.Integer(), server_default='100', nullable=True))
        batch_op.add_column(sa.Column('max_keys', sa.Integer(), server_default='50', nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('max_keys')
        batch_op.drop_column('max_queued_jobs')
    op.drop_table('key_revocations')
    op.drop_table('platform_secrets')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('hash_scheme')
