"""Deployment: Kubernetes manifests, policy export for edge devices, keys and certificates, the edge runner."""
