"""farcuda.cluster: remote GPU pools handed out by the schedulers that already run clusters.

- ``pool``: the pool file (which servers, which GPUs, whole or in SM-budgeted slices) and the
  pool seen whole (every server's ``farcuda status`` in one view).
- ``ledger``: who holds which unit of a pool, claimed atomically under a file lock.
- ``slurm``: ``farcuda-slurm``, the Slurm hooks (licenses per pool, prologs and epilogs).
- ``deviceplugin``: ``farcuda-device-plugin``, the kubelet device plugin (gRPC v1beta1).

Nothing here is a scheduler: Slurm and Kubernetes decide who gets how many; farcuda decides
which units, and hands each job its device map.
"""
