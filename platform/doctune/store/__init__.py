"""Persistence: the metadata store (SQLAlchemy + Alembic), the object store (S3), API keys."""

from doctune.store.db import ApiKey, Database, Dataset, Deployment, DeploymentRevision, Job, Model, Tenant
from doctune.store.keys import KeyVerifier, Principal
from doctune.store.objects import ObjectStore
from doctune.store.stores import Stores

__all__ = ["ApiKey", "Database", "Dataset", "Deployment", "DeploymentRevision", "Job", "KeyVerifier", "Model",
           "ObjectStore", "Principal", "Stores", "Tenant"]
