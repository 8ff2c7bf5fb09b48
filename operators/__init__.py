"""Kubernetes-side parts of doctune: the operator (``doctune_operator``) and its CRDs (``crds/``)."""
