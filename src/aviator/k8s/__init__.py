"""aviator's Kubernetes home, the pure half: CRDs, rendered workloads and the install bundle.

Everything here turns typed aviator objects into plain Kubernetes manifests (dicts ready for
``yaml.safe_dump`` or a server-side apply):

- ``crds``: a ``CustomResourceDefinition`` per aviator kind that lives as a CRD in a cluster,
  generated from the pydantic models through the kinds registry;
- ``render``: what the operator applies for one ModelDeployment (Deployment, Service,
  ResourceClaimTemplate, InferencePool, HorizontalPodAutoscaler, PodDisruptionBudget);
- ``install``: the bundle ``aviator install --print`` writes (CRDs, namespace, service accounts,
  RBAC, the operator and the gateway).

MUST stay pure: no cluster, no network, no files, no clock. The operator (a shell) applies what
these functions return; tests validate it against the Kubernetes schemas offline.
"""
