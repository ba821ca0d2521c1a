"""Offline demo material: tiny random-weight models built locally and real local model servers.

Used by the main job (``examples/quickstart.py``) and by the tests; nothing here downloads anything.
"""
