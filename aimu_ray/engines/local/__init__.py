"""In-process engines: models whose weights live in the hosting process (a ModelActor, a Serve replica).

Each is built from ``(ModelLoad, Target)`` and loads its weights in ``__init__``; ``engines.local_engine_class`` finds it
through ``engines.ENGINES``, so torch, transformers, diffusers and llama_cpp are imported only where a model runs.
"""
