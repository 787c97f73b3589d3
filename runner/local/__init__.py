"""The local cluster: a real single-node Kubernetes on this machine (`kind: local`).

Like one of kind's providers, it only *gets* a cluster: bring it up, hand over a kubeconfig
context and a registry to push to, tear it down and put the host back. Cells then run through
the kubernetes backend, which never learns that the cluster is local.
"""
