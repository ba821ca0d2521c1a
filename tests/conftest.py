"""Test-wide environment: offline, quiet, and no Ray token auth (ENVIRONMENT.md).

Set before anything imports huggingface_hub or starts Ray, which read these once.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL",
            "OLLAMA_HOST", "AIMU_LANGUAGE_MODEL"):
    os.environ.pop(key, None)        # a developer's real keys and endpoints must never reach a loopback test
