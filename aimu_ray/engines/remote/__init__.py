"""Engines that call a provider over the network through its SDK: one module per wire protocol, sharing one
retry loop (``base``) and one translation of SDK errors into aimu_ray's typed errors (``errors``)."""
