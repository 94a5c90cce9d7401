"""The Control API: Kubernetes-shaped REST over the store, with admission and an OpenAPI document.

It MUST authenticate every request (the admin token, compared in constant time), bound request
bodies, run admission (``aviator.api.admission``) before any write, answer every failure with a
``Status`` body naming the field and what was expected, and stream watches as JSON lines.
It MUST NOT hold state of its own beyond open watches; the store is the truth.
"""
