"""The deployment examples parse and say what their tools expect: Ray's cluster launcher accepts
``examples/cluster.yaml`` (its own schema, after filling in its AWS defaults), the KubeRay ``RayService``
and ``serve_deploy.yaml`` carry Serve configs that Serve's schema accepts and whose app ``args`` are a valid
``AppConfig`` inline, and ``handle_app.py`` is run beside the served app, not in its place. No Ray, no network.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from aimu_ray.deployments.config import AppConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


# ------------------------------------------------------------------------------------------ cluster.yaml


@pytest.fixture(scope="module")
def cluster() -> dict:
    return load("cluster.yaml")


def test_cluster_yaml_has_the_launchers_required_keys(cluster):
    assert {"cluster_name", "provider", "available_node_types", "head_node_type"} <= cluster.keys()
    assert cluster["provider"]["type"] == "aws"
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_cluster_yaml_passes_the_launchers_own_schema(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))        # what `ray up` runs first; raises on a bad config


def test_cluster_yaml_has_a_cpu_head_and_gpu_workers(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]["node_config"]["InstanceType"]
    workers = [t["node_config"]["InstanceType"] for name, t in types.items() if name != cluster["head_node_type"]]
    assert not head.startswith(("g", "p"))                                   # m6i: no GPU on the head
    assert workers and all(w.startswith(("g5.", "p4d.")) for w in workers)


def test_cluster_yaml_installs_aimu_ray_from_git_and_starts_ray(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "aimu_ray[all] @ git+https://github.com/" in setup
    assert any("ray start --head" in c for c in cluster["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:" in c for c in cluster["worker_start_ray_commands"])


def test_cluster_yaml_mounts_only_files_that_exist(cluster):
    for local in cluster.get("file_mounts", {}).values():
        assert (ROOT / local).exists(), f"file_mounts names {local}, which is not in the repository"


# ------------------------------------------------------------------------------- kuberay-rayservice.yaml


@pytest.fixture(scope="module")
def service() -> dict:
    return load("kuberay-rayservice.yaml")


@pytest.fixture(scope="module")
def serve_config(service) -> dict:
    text = service["spec"]["serveConfigV2"]
    assert isinstance(text, str)                    # KubeRay takes the Serve config as a YAML string
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def app(serve_config) -> dict:
    [app] = serve_config["applications"]
    return app


def containers(service) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_rayservice_is_a_v1_rayservice(service):
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert {"serveConfigV2", "rayClusterConfig"} <= service["spec"].keys()


def test_serve_config_passes_serves_own_schema(serve_config):
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)      # what `serve deploy` and KubeRay submit


def test_the_app_is_aimu_rays_and_its_args_are_an_app_config(app):
    assert app["import_path"] == "aimu_ray.deployments:build_app"
    config = AppConfig.model_validate(app["args"])
    assert (config.name, config.route_prefix) == (app["name"], app["route_prefix"])
    by_name = {model.name: model for model in config.models}
    assert by_name["qwen3-8b"].model == "hf:Qwen/Qwen3-8B"
    qwen = by_name["qwen3-8b"].model_load().replicas
    assert (qwen.min_replicas, qwen.max_replicas, qwen.target_in_flight) == (1, 4, 32)
    assert by_name["musicgen-small"].load == "on_demand"
    assert by_name["sdxl"].task == "image" and by_name["musicgen-small"].task == "audio"
    assert by_name["claude-sonnet"].api_key_env == "ANTHROPIC_API_KEY" and not by_name["claude-sonnet"].in_process


def test_every_key_the_app_reads_comes_from_a_secret_in_every_pod(service, app):
    config = AppConfig.model_validate(app["args"])
    wanted = {m.api_key_env for m in config.models if m.api_key_env} | {config.api_keys_env}
    assert not config.api_keys                          # no key written in the manifest itself
    for container in containers(service):
        from_secrets = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        assert wanted <= from_secrets, container["name"]


def test_gpu_workers_ask_kubernetes_and_ray_for_the_same_gpus(service):
    cluster = service["spec"]["rayClusterConfig"]
    for group in cluster["workerGroupSpecs"]:
        [container] = group["template"]["spec"]["containers"]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus >= 1 and group["rayStartParams"]["num-gpus"] == str(gpus)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())   # KubeRay wants strings
    assert len({c["image"] for c in containers(service)}) == 1                    # one image, aimu_ray inside


# ------------------------------------------------------------------------------------------- serve.yaml


def test_serve_yaml_and_the_demo_config_are_app_configs(monkeypatch):
    """The files ``aimu-ray serve`` takes: real models, and the demo's (SmolLM2 twice, tiny image and audio)."""
    real = AppConfig.from_yaml(EXAMPLES / "serve.yaml")
    assert {model.task for model in real.models} == {"text", "image", "audio"}
    monkeypatch.setenv("AIMU_RAY_DEMO_MODELS", "/tmp/tiny")
    monkeypatch.setenv("AIMU_RAY_DEMO_SMOLLM2_HF", "/tmp/smollm2")
    monkeypatch.setenv("AIMU_RAY_DEMO_SMOLLM2_GGUF", "/tmp/smollm2.gguf")
    monkeypatch.setenv("AIMU_RAY_DEMO_PORT", "8123")
    demo = AppConfig.from_yaml(EXAMPLES / "demo.yaml")
    assert demo.port == 8123
    assert [model.model for model in demo.models] == ["hf:/tmp/smollm2", "llamacpp:smollm2",
                                                      "hf:/tmp/tiny/tiny-stable-diffusion", "hf:/tmp/tiny/tiny-musicgen"]
    assert demo.models[1].options["model_path"] == "/tmp/smollm2.gguf"


def test_the_serve_deploy_config_carries_serve_yamls_app_inline():
    """Inline, not a path: ``serve deploy`` builds the app on a cluster node, where a relative path names nothing."""
    from ray.serve.schema import ServeDeploySchema

    deploy = yaml.safe_load((EXAMPLES / "serve_deploy.yaml").read_text())
    ServeDeploySchema.model_validate(deploy)
    (app,) = deploy["applications"]
    assert app["import_path"] == "aimu_ray.deployments:build_app"
    assert "config" not in app["args"]
    config = load_config(app["args"])                 # what build_app does with Serve's args
    assert config == AppConfig.from_yaml(EXAMPLES / "serve.yaml")
    assert (config.name, config.route_prefix) == (app["name"], app["route_prefix"])
    assert (config.host, config.port) == (deploy["http_options"]["host"], deploy["http_options"]["port"])


def test_a_config_path_in_serves_args_that_names_no_file_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # as a Ray worker's working directory is not the user's
    with pytest.raises(FileNotFoundError, match="put the config inline as the app's args") as refused:
        load_config({"config": "examples/serve.yaml"})
    assert str(tmp_path / "examples" / "serve.yaml") in str(refused.value)


# ------------------------------------------------------------------------------------------ handle_app.py


def test_the_handle_app_runs_beside_the_served_app_under_a_name_and_prefix_of_its_own():
    """Its docstring's ``serve run`` line: ``/`` and ``default`` would take the aimu_ray app's place."""
    doc = ast.get_docstring(ast.parse((EXAMPLES / "handle_app.py").read_text()))
    [line] = [line.strip() for line in doc.splitlines() if line.strip().startswith("serve run")]
    argv = shlex.split(line)
    served = AppConfig.from_yaml(EXAMPLES / "serve.yaml")
    assert argv[argv.index("--route-prefix") + 1] not in ("/", served.route_prefix)
    assert argv[argv.index("--name") + 1] not in ("default", served.name)
    assert "--non-blocking" in argv and argv[-1] == "examples.handle_app:app"
