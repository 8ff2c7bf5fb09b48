"""Persistence: the metadata store (SQLAlchemy + Alembic) and the object store (S3)."""

from doctune.store.db import Database, Dataset, Deployment, DeploymentRevision, Job, ApiKey, Model, Tenant
from doctune.store.objects import ObjectStore

__all__ = ["ApiKey", "Database", "Dataset", "Deployment", "DeploymentRevision", "Job", "Model", "ObjectStore", "Tenant"]
