"""The doctune operator: a kopf operator that is a door, like the console.

It turns doctune's custom resources (``doctune.io/v1alpha1``: Tenant, FineTuneJob, Sweep,
ModelDeployment) into calls of the public REST API (:class:`doctune.client.DoctuneClient`) made
under the namespace's tenant, so quotas, fair share, events and the registry stay in the API.
It never imports the platform's services, runners, train or serve code (an import-linter
contract says so). Run it with ``kopf run -m operators.doctune_operator.handlers --all-namespaces``.

- :mod:`.api`: the API side: the clients, spec conversion, status and conditions, and how API
  errors become ``kopf.PermanentError`` / ``kopf.TemporaryError``.
- :mod:`.cluster`: the Kubernetes side of a Tenant: Namespace, ResourceQuota, LimitRange, the
  API-key Secret and an optional dedicated RayCluster.
- :mod:`.handlers`: the kopf handlers.
"""
