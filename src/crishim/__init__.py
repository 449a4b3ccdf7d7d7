"""crishim: a Kubernetes CRI (runtime.v1) server that runs pods on a Docker Engine."""

__version__ = "0.1.0"
