"""a tenant setting: redact personal data in every dataset it uploads

``tenants.redact_pii`` (false for every existing tenant): when true, each dataset the tenant
uploads has its emails, phone, card, IBAN and national ID numbers and (heuristically found) person
names replaced by typed placeholders before it is stored (doctune.services.redaction).

Revision ID: 0014
Revises: 0013
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redact_pii', sa.Boolean(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('redact_pii')
