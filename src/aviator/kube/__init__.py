"""aviator's Kubernetes home, the I/O half: adapters that talk to a live API server.

- ``api``: ``KubeApi``, raw JSON requests and watches through ``kubernetes_asyncio`` (credentials
  from the Pod's service account or a kubeconfig), every failure translated once into
  ``aviator.api.errors``; the one client of the gateway's kubernetes mode and of the operator
  (whose object-level verbs, ``aviator.operator.objects``, are a thin layer over it);
- ``store``: ``KubeStore``, the ``Store`` protocol over the aviator CRDs, so controllers, reflectors
  and the policy view do not know which home they run in;
- ``endpoints``: ``SliceDiscovery``, the gateway feed that fills the endpoint table from
  EndpointSlices and the model directory from ModelDeployments;
- ``patch``: the merge-patch diff the store writes with (pure).

The pure half (CRDs, rendering, the install bundle) is ``aviator.k8s`` and must not import this
package or ``kubernetes_asyncio``. Nothing here may import the CLI or the plane.
"""
