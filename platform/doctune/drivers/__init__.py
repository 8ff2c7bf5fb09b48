"""Drivers: what runs in a Ray job's driver process on the cluster.

``job`` runs one attempt of a fine-tuning job (Ray Train), ``sweep`` a sweep (Ray Tune),
``deploy`` starts or deletes a deployment's Serve application. Each records what happened
through the services, exactly as the API would. The ``ray_jobs`` entrypoints call them.
"""
