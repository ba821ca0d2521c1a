"""Ray Serve front end: an OpenAI-compatible HTTP app and deployment handles over the same engines.

Serve's import path is ``aimu_ray.deployments:build_app`` (args: ``{config: path}`` or the config inline).
"""

from .app import build_app, run
from .config import AppConfig, ServedModel, load_config
from ..clients.served import connect

__all__ = ["AppConfig", "ServedModel", "build_app", "connect", "load_config", "run"]
