"""The aviator operator: ModelDeployment CRs in a cluster, driven by the plane's own logic.

- ``plan``: the pure decisions (admission of a CR, the fleet from ResourceSlices, the replica
  count and capacity plan of the embedded controller, what to apply and prune, the status);
- ``resources``: the kinds the operator touches and their REST paths (pure);
- ``objects``: object-level verbs (server-side apply, merge patch, status) over the one
  Kubernetes client, :class:`aviator.kube.api.KubeApi`;
- ``reconciler``: the shell that reads the cluster, asks ``plan`` and writes;
- ``handlers``: the kopf registry wiring events to the reconciler;
- ``grants``: the embedded plane's Grant expiry controller, run over ``aviator.kube.store``;
- ``leader``: leader election over a ``coordination.k8s.io`` Lease;
- ``runner``: the process (``aviator operator``): configuration, election, kopf, liveness.

Nothing here decides differently from the embedded plane: the decisions are ``aviator.api``,
``aviator.controllers.plans``, ``aviator.placement`` and ``aviator.k8s.render``, reused.
"""
