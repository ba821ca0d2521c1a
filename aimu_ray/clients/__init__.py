"""The aimu-compatible surface: clients that keep a conversation's state and send requests through a backend.

``text`` and ``media`` are the async clients, ``sync`` drives them from sync code, ``served`` reaches the models of
a running Serve app, ``loaded_models`` lists and unloads in-process models, ``runtime`` is ``init``/``shutdown``.
"""
