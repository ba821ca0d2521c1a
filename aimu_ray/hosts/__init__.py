"""What holds a model or runs requests on the cluster: the Ray actors and the host core they share.

``ModelActor`` hosts one in-process model; ``PoolWorker`` runs remote-provider requests; ``ModelRegistry``
places and creates model actors and keeps the memory ledger; ``PoolManager`` and ``Limiter`` start the pool's
workers and hold the cluster-wide quotas. Serve replicas (``deployments``) host the same engines the same way.
"""
