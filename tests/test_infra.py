"""Checks on the deployment files in infra/ and jobs/runtime_env.yaml.

The KubeRay manifests are validated against the real CRD schemas (the OpenAPI v3 schema an API
server would apply, with the Kubernetes extensions translated to JSON Schema), then the fields
that matter are asserted: entrypoint, GPUs, auth token, secrets, schedule, image, Ray version.
Every validator here is also shown a broken input, so a check that cannot fail shows up as a
failing test.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CRD_DIR = ROOT.parent / "shared" / "data" / "kuberay-crds"
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}
IMAGE = "ghcr.io/example/indexer:0.1.0"
CREDENTIALS_SECRET = "indexer-credentials"
RAY_AUTH_REF = {"name": "indexer-ray-auth", "key": "auth_token"}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def ray_pin() -> str:
    """The exact Ray version pinned in pyproject.toml (the cluster image must match it)."""
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(r"ray(\[[^\]]*\])?==([0-9.]+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError("pyproject.toml pins no exact ray version (ray[...]==X.Y.Z)")


def rayjob() -> dict:
    return load_yaml(INFRA / "rayjob.yaml")


def raycronjob() -> dict:
    return load_yaml(INFRA / "raycronjob.yaml")


def job_specs() -> list[tuple[str, dict]]:
    """The RayJob spec of both manifests: the one-off run and the nightly template."""
    return [("rayjob", rayjob()["spec"]), ("raycronjob", raycronjob()["spec"]["jobTemplate"])]


# ---------------------------------------------------------------------------------------------
# CRD schema -> JSON Schema


def to_jsonschema(node: dict) -> dict:
    """Translate one Kubernetes structural schema node (recursively) into plain JSON Schema.

    - ``x-kubernetes-int-or-string`` becomes integer-or-string (the CRDs usually spell it out);
    - ``nullable`` adds ``null`` to the type;
    - objects with ``properties`` reject unknown fields, as ``kubectl apply`` does with strict
      field validation (the default), instead of the silent pruning of lenient clients;
    - ``x-kubernetes-list-type: set`` means unique items; ``map`` lists get a key-uniqueness check
      from the validator below. CEL rules (``x-kubernetes-validations``) are not evaluated.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_jsonschema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_jsonschema(sub) for sub in value]
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(validator, keys, instance, schema) -> Iterator[Any]:
    """``x-kubernetes-list-type: map``: no two items may share their key fields (e.g. env names)."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "array"):
        return
    defaults = {k: schema.get("items", {}).get("properties", {}).get(k, {}).get("default") for k in keys}
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k, defaults[k]) for k in keys)
        if key in seen:
            yield ValidationError(f"duplicate entries {seen[key]} and {i} with {dict(zip(keys, key))}")
        seen[key] = i


@functools.cache
def crd_validator(kind: str, api_version: str):
    """A jsonschema validator for ``kind`` at ``api_version`` built from the stored CRD."""
    jsonschema = pytest.importorskip("jsonschema")
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (shared/data/kuberay-crds next to the repo)")
    crd = load_yaml(CRD_DIR / CRD_FILES[kind])
    assert crd["spec"]["names"]["kind"] == kind
    group, _, version = api_version.partition("/")
    assert group == crd["spec"]["group"], f"apiVersion {api_version}: the CRD's group is {crd['spec']['group']}"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert version in versions, f"{kind} has no version {version!r}; the CRD serves {sorted(versions)}"
    assert versions[version]["served"], f"{kind} {version} is not served"

    formats = jsonschema.FormatChecker(formats=())

    @formats.checks("int32")
    def _int32(value) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @formats.checks("int64")
    def _int64(value) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys})
    return cls(to_jsonschema(versions[version]["schema"]["openAPIV3Schema"]), format_checker=formats)


def schema_errors(doc: dict) -> list[str]:
    """Every schema violation of a manifest, as ``path: message``."""
    validator = crd_validator(doc["kind"], doc["apiVersion"])
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]


# ---------------------------------------------------------------------------------------------
# Cron

_MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_CRON_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
                ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))


def cron_sets(expr: str) -> list[set[int]]:
    """Expand a standard 5-field cron expression into the allowed values per field.

    Raises ValueError naming the field for anything a standard cron parser would reject.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r}: expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    sets = []
    for text, (name, lo, hi, names) in zip(fields, _CRON_FIELDS):
        allowed: set[int] = set()
        for part in text.split(","):
            m = re.fullmatch(r"(\*|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?", part)
            if not m:
                raise ValueError(f"{name}: cannot parse {part!r}")

            def value(tok: str) -> int:
                v = int(tok) if tok.isdigit() else names.get(tok.upper())
                if v is None or not lo <= v <= hi:
                    raise ValueError(f"{name}: {tok!r} is not in {lo}-{hi}")
                return v

            start, end = (lo, hi) if m.group(1) == "*" else (value(m.group(2)), value(m.group(3) or m.group(2)))
            if m.group(4) and not m.group(3) and m.group(1) != "*":
                end = hi  # "5/15" means 5-max/15
            step = int(m.group(4) or 1)
            if step == 0 or start > end:
                raise ValueError(f"{name}: empty range {part!r}")
            allowed.update(range(start, end + 1, step))
        if name == "day of week" and 7 in allowed:
            allowed = (allowed - {7}) | {0}
        sets.append(allowed)
    return sets


def cron_min_interval(expr: str, days: int = 62) -> dt.timedelta:
    """Shortest gap between two consecutive firings over ``days`` days (Vixie cron day rule:
    when both day fields are restricted, either may match)."""
    minute, hour, dom, month, dow = cron_sets(expr)
    either = expr.split()[2] != "*" and expr.split()[4] != "*"
    fires = []
    for n in range(days):
        day = dt.datetime(2026, 1, 1) + dt.timedelta(days=n)
        in_dom, in_dow = day.day in dom, day.isoweekday() % 7 in dow
        if day.month in month and ((in_dom or in_dow) if either else (in_dom and in_dow)):
            fires += [day.replace(hour=h, minute=m) for h in sorted(hour) for m in sorted(minute)]
    assert len(fires) >= 2, f"{expr!r} fires fewer than twice in {days} days"
    return min(b - a for a, b in zip(fires, fires[1:]))


# ---------------------------------------------------------------------------------------------
# Literal secrets

_SECRET_NAME = re.compile(r"(^|_)(KEY|API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)")
_KEY_LIKE = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\beyJ[\w-]{10,}\.[\w-]{10,}"),  # JWT
)
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{32,}")


def _looks_like_key(text: str) -> bool:
    text = re.sub(r"@sha256:[0-9a-f]{64}", "", text)  # image digests are not secrets
    if any(p.search(text) for p in _KEY_LIKE):
        return True
    for tok in _TOKEN.findall(text):
        mixed = re.search(r"[0-9]", tok) and re.search(r"[a-z]", tok) and re.search(r"[A-Z]", tok)
        hexy = re.fullmatch(r"[0-9a-f]{32,}", tok) and re.search(r"[0-9]", tok) and re.search(r"[a-f]", tok)
        if mixed or hexy:
            return True
    return False


def _is_interpolation(value: str) -> bool:
    return bool(re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", value))


def secret_findings(node: Any, path: str = "") -> list[str]:
    """Literal secrets in a parsed manifest: secret-named env vars with inline values, and any
    string that looks like a key. ``runtimeEnvYAML`` block strings are parsed and searched too."""
    found: list[str] = []
    if isinstance(node, dict):
        name, value = node.get("name"), node.get("value")
        if isinstance(name, str) and value not in (None, "") and _SECRET_NAME.search(name.upper()):
            found.append(f"{path}: env {name} has an inline value; use valueFrom.secretKeyRef or envFrom")
        for key, sub in node.items():
            sub_path = f"{path}/{key}"
            if key == "runtimeEnvYAML" and isinstance(sub, str):
                found += secret_findings(yaml.safe_load(sub), sub_path)
                continue
            if path.rsplit("/", 1)[-1] in ("environment", "env_vars") and _SECRET_NAME.search(str(key).upper()):
                if not (isinstance(sub, str) and _is_interpolation(sub)):
                    found.append(f"{sub_path}: secret-named variable with a literal value")
            found += secret_findings(sub, sub_path)
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            found += secret_findings(sub, f"{path}/{i}")
    elif isinstance(node, str) and _looks_like_key(node):
        found.append(f"{path}: value looks like a key or token")
    return found


# ---------------------------------------------------------------------------------------------
# Pod helpers


def pod_containers(spec: dict) -> dict[str, dict]:
    """Every container of a RayJob spec by role: head, worker:<group>, submitter."""
    cluster = spec["rayClusterSpec"]
    out = {f"head/{c['name']}": c for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]}
    for group in cluster.get("workerGroupSpecs", []):
        out.update({f"worker:{group['groupName']}/{c['name']}": c for c in group["template"]["spec"]["containers"]})
    for c in spec.get("submitterPodTemplate", {}).get("spec", {}).get("containers", []):
        out[f"submitter/{c['name']}"] = c
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def gpu_limit(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


# =============================================================================================
# Schema validation


@pytest.mark.parametrize("load", [rayjob, raycronjob], ids=["rayjob", "raycronjob"])
def test_manifest_matches_kuberay_crd(load):
    doc = load()
    errors = schema_errors(doc)
    assert not errors, "\n".join(errors)


def _head(d: dict) -> dict:
    return d["spec"]["rayClusterSpec"]["headGroupSpec"]


def _head_container(d: dict) -> dict:
    return _head(d)["template"]["spec"]["containers"][0]


BROKEN_RAYJOBS: list[tuple[str, Callable[[dict], None], str]] = [
    ("misspelled field", lambda d: d["spec"].update(shutdownAfterJobFinish=d["spec"].pop("shutdownAfterJobFinishes")),
     "'shutdownAfterJobFinish' was unexpected"),
    ("unknown top-level key", lambda d: d.update(specs={}), "'specs' was unexpected"),
    ("integer rayStartParams value", lambda d: _head(d)["rayStartParams"].update({"num-cpus": 0}),
     "rayStartParams/num-cpus: 0 is not of type 'string'"),
    ("string ttl", lambda d: d["spec"].update(ttlSecondsAfterFinished="600"), "ttlSecondsAfterFinished: '600'"),
    ("int32 overflow", lambda d: d["spec"].update(activeDeadlineSeconds=2**40), "is not a 'int32'"),
    ("worker group without groupName", lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"),
     "'groupName' is a required property"),
    ("resource quantity as a list", lambda d: _head_container(d)["resources"]["limits"].update(cpu=["4"]),
     "limits/cpu"),
    ("duplicate env name", lambda d: _head_container(d)["env"].append({"name": "RAY_AUTH_MODE", "value": "x"}),
     "duplicate entries"),
    ("bad enum", lambda d: d["spec"]["rayClusterSpec"]["autoscalerOptions"].update(upscalingMode="Fast"),
     "upscalingMode: 'Fast' is not one of"),
]


@pytest.mark.parametrize("mutate, expected", [(m, e) for _, m, e in BROKEN_RAYJOBS],
                         ids=[name for name, _, _ in BROKEN_RAYJOBS])
def test_schema_validation_rejects_broken_rayjob(mutate, expected):
    doc = rayjob()
    mutate(doc)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), f"expected an error containing {expected!r}, got {errors}"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["spec"].pop("schedule"), "'schedule' is a required property"),
    # The CRD has no concurrencyPolicy (unlike batch/v1 CronJob): overlap is bounded another way.
    (lambda d: d["spec"].update(concurrencyPolicy="Forbid"), "'concurrencyPolicy' was unexpected"),
    (lambda d: d["spec"]["jobTemplate"].update(entrypoint=["python"]), "jobTemplate/entrypoint"),
], ids=["no schedule", "concurrencyPolicy", "entrypoint as list"])
def test_schema_validation_rejects_broken_raycronjob(mutate, expected):
    doc = raycronjob()
    mutate(doc)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), f"expected an error containing {expected!r}, got {errors}"


def test_schema_translation_keeps_int_or_string():
    """Quantities may be integers or strings; the translation must not over-reject them."""
    doc = rayjob()
    _head_container(doc)["resources"]["limits"]["cpu"] = 4
    _head_container(doc)["resources"]["requests"]["cpu"] = "3500m"
    assert schema_errors(doc) == []


# =============================================================================================
# Entrypoint


def entrypoint_tokens(spec: dict) -> list[str]:
    return shlex.split(spec["entrypoint"])


def config_arg(tokens: list[str]) -> str:
    assert "--config" in tokens, f"entrypoint has no --config: {tokens}"
    return tokens[tokens.index("--config") + 1]


def test_entrypoint_shape():
    for name, spec in job_specs():
        tokens = entrypoint_tokens(spec)
        assert tokens[0] == "python" and tokens[1] == "jobs/index.py", f"{name}: {spec['entrypoint']}"
        config = config_arg(tokens)
        assert config.startswith("configs/") and config.endswith((".yaml", ".yml")), f"{name}: {config}"
        flags = [t for t in tokens[2:] if t.startswith("-")]
        assert set(flags) <= {"--config", "--set", "--full"}, f"{name}: flags jobs/index.py doesn't take: {flags}"


def test_entrypoint_script_exists():
    """The script the RayJob runs is in the repository (and so in the image, under jobs/)."""
    script = entrypoint_tokens(rayjob()["spec"])[1]
    assert (ROOT / script).is_file(), f"{script} does not exist in the repository"


def test_entrypoint_config_exists():
    """The config the RayJob names is in the repository (and so in the image, under configs/)."""
    config = config_arg(entrypoint_tokens(rayjob()["spec"]))
    assert (ROOT / config).is_file(), f"{config} does not exist in the repository"


# =============================================================================================
# Cluster shape, image, auth, secrets


def test_cluster_shape():
    for name, spec in job_specs():
        cluster = spec["rayClusterSpec"]
        assert spec["submissionMode"] == "K8sJobMode", name
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0, name
        assert cluster["rayVersion"] == ray_pin(), f"{name}: rayVersion {cluster['rayVersion']} != ray pin {ray_pin()}"
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"].get("num-cpus") == "0", f"{name}: the head should do no work"
        for c in head["template"]["spec"]["containers"]:
            assert gpu_limit(c) == 0, f"{name}: head container {c['name']} asks for a GPU"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) <= set(c["resources"]["limits"]), name
        gpu_groups = [g for g in cluster["workerGroupSpecs"]
                      if any(gpu_limit(c) >= 1 for c in g["template"]["spec"]["containers"])]
        assert gpu_groups, f"{name}: no worker group requests nvidia.com/gpu"
        for g in gpu_groups:
            assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
            assert g["maxReplicas"] >= 1
        assert cluster["enableInTreeAutoscaling"] is True, f"{name}: min/max replicas need the autoscaler"


def test_one_image_everywhere():
    """Head, workers and submitter run the same image (a Ray version skew breaks the cluster),
    tagged with the project version."""
    assert IMAGE.rsplit(":", 1)[1] == pyproject()["project"]["version"]
    for name, spec in job_specs():
        images = {role: c["image"] for role, c in pod_containers(spec).items()}
        assert {"head", "worker:gpu", "submitter"} <= {r.split("/")[0] for r in images}, images
        assert set(images.values()) == {IMAGE}, f"{name}: {images}"


def test_ray_auth_token_everywhere():
    """Token auth: every Ray node, the autoscaler and the job submitter get the same token."""
    for name, spec in job_specs():
        envs = {role: env_of(c) for role, c in pod_containers(spec).items()}
        envs["autoscaler"] = {e["name"]: e for e in spec["rayClusterSpec"]["autoscalerOptions"]["env"]}
        for role, env in envs.items():
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name} {role}: RAY_AUTH_MODE"
            token = env.get("RAY_AUTH_TOKEN", {})
            assert "value" not in token, f"{name} {role}: literal RAY_AUTH_TOKEN"
            assert token.get("valueFrom", {}).get("secretKeyRef") == RAY_AUTH_REF, f"{name} {role}: {token}"


def test_credentials_come_from_a_secret():
    for name, spec in job_specs():
        for role, c in pod_containers(spec).items():
            if role.startswith("submitter"):
                continue
            refs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
            assert CREDENTIALS_SECRET in refs, f"{name} {role}: no envFrom secretRef {CREDENTIALS_SECRET}"


def test_no_literal_secrets():
    docs = {
        "rayjob.yaml": rayjob(),
        "raycronjob.yaml": raycronjob(),
        "compose.yaml": load_yaml(INFRA / "compose.yaml"),
        "runtime_env.yaml": load_yaml(ROOT / "jobs" / "runtime_env.yaml"),
    }
    findings = [f"{file}{f}" for file, doc in docs.items() for f in secret_findings(doc)]
    assert not findings, "\n".join(findings)
    dockerfile = (INFRA / "Dockerfile").read_text()
    for instr, args in dockerfile_instructions(dockerfile):
        if instr in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args):
                assert not _SECRET_NAME.search(name.upper()), f"Dockerfile {instr} {name}: secrets don't go in images"


@pytest.mark.parametrize("mutate", [
    lambda d: _head_container(d)["env"].append({"name": "QDRANT_API_KEY", "value": "not-a-real-key"}),
    lambda d: d["metadata"].setdefault("annotations", {}).update(note="AKIAIOSFODNN7EXAMPLE"),
    lambda d: d["metadata"].setdefault("annotations", {}).update(note="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    lambda d: d["spec"].update(runtimeEnvYAML="env_vars:\n  ES_API_KEY: abc\n"),
    lambda d: _head_container(d)["env"].append({"name": "X", "value": "0123456789abcdef0123456789abcdef"}),
], ids=["inline env value", "aws key id", "aws secret", "runtime env var", "hex token"])
def test_secret_scan_finds_literals(mutate):
    doc = rayjob()
    mutate(doc)
    assert secret_findings(doc), "the scan missed a literal secret"


def test_secret_scan_compose_literal():
    compose = load_yaml(INFRA / "compose.yaml")
    compose["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] = "hunter2"
    assert secret_findings(compose)


# =============================================================================================
# Runtime env (RayJob and jobs/runtime_env.yaml)


def validate_runtime_env(data: dict) -> None:
    """Ray's own validation of a runtime env (env_vars must be strings, pip spec shape, ...)."""
    runtime_env = pytest.importorskip("ray.runtime_env")
    runtime_env.RuntimeEnv(**data)


def test_rayjob_runtime_env():
    for name, spec in job_specs():
        data = yaml.safe_load(spec["runtimeEnvYAML"])
        validate_runtime_env(data)
        assert data["env_vars"]["HF_HUB_OFFLINE"] == "1", name
        assert data["env_vars"]["TOKENIZERS_PARALLELISM"] == "false", name


def test_runtime_env_validation_rejects_non_strings():
    with pytest.raises(TypeError, match="env_vars"):
        validate_runtime_env({"env_vars": {"HF_HUB_OFFLINE": 1}})


def test_job_runtime_env_file():
    data = load_yaml(ROOT / "jobs" / "runtime_env.yaml")
    validate_runtime_env(data)
    assert data["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert data["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    assert "working_dir" not in data, "the working dir comes from `ray job submit --working-dir`"
    excluded = {e.strip("/") for e in data["excludes"]}
    assert {".venv", ".git", ".indexer", "data"} <= excluded, excluded


def test_job_runtime_env_pip_matches_pyproject():
    """The pip list is pyproject's dependencies less ray (the cluster's own Ray must be used)."""
    data = load_yaml(ROOT / "jobs" / "runtime_env.yaml")
    pip = data["pip"]["packages"] if isinstance(data["pip"], dict) else data["pip"]
    deps = [d for d in pyproject()["project"]["dependencies"] if not re.match(r"ray\b", d)]
    assert sorted(pip) == sorted(deps)


# =============================================================================================
# Schedule


def test_schedule_is_a_valid_cron():
    schedule = raycronjob()["spec"]["schedule"]
    cron_sets(schedule)
    assert cron_min_interval(schedule) == dt.timedelta(days=1), "expected a nightly schedule"


@pytest.mark.parametrize("expr", ["0 2 * *", "0 2 * * * *", "61 2 * * *", "0 24 * * *", "0 2 0 * *",
                                  "0 2 * 13 *", "0 2 * * 8", "0 2-1 * * *", "*/0 * * * *", "0 2 * * FUNDAY", "@daily"])
def test_cron_validator_rejects(expr):
    with pytest.raises(ValueError):
        cron_sets(expr)


@pytest.mark.parametrize("expr, gap", [("0 2 * * *", dt.timedelta(days=1)), ("*/15 0-6 1,15 * *", dt.timedelta(minutes=15)),
                                       ("30 3 * * MON-FRI", dt.timedelta(days=1)), ("0 0 * * 0", dt.timedelta(days=7))])
def test_cron_validator_accepts(expr, gap):
    assert cron_min_interval(expr) == gap


def test_nightly_runs_cannot_overlap():
    """The CRD has no concurrencyPolicy, so a run must end (activeDeadlineSeconds, then
    the cluster's TTL) before the next tick."""
    spec = raycronjob()["spec"]
    job = spec["jobTemplate"]
    period = cron_min_interval(spec["schedule"]).total_seconds()
    assert job["activeDeadlineSeconds"] + job["ttlSecondsAfterFinished"] < period


def test_cron_template_is_the_rayjob():
    """The nightly run is the same job as the one-off RayJob; edit both files together."""
    assert raycronjob()["spec"]["jobTemplate"] == rayjob()["spec"]


# =============================================================================================
# Image and local backends


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def test_dockerfile_builds_the_project_on_the_pinned_ray():
    instructions = dockerfile_instructions((INFRA / "Dockerfile").read_text())
    args: dict[str, str] = {}
    for instr, rest in instructions:
        if instr == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v.strip('"')
    base = next(rest for instr, rest in instructions if instr == "FROM")
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base).split()[0]
    m = re.fullmatch(r"rayproject/ray:([0-9.]+)-py311(-[a-z0-9]+)?", base)
    assert m, f"unexpected base image {base}"
    assert m.group(1) == ray_pin(), f"base image Ray {m.group(1)} != pyproject pin {ray_pin()}"

    runs = [rest for instr, rest in instructions if instr == "RUN"]
    assert any(re.search(r"pip install\b[^&;|]*\s\.(\s|$)", r) for r in runs), "no `pip install .` of the project"
    copies = [rest.split() for instr, rest in instructions if instr == "COPY"]
    sources = {s.rstrip("/") for c in copies for s in c[:-1] if not s.startswith("--")}
    assert {"pyproject.toml", "indexer", "jobs", "configs"} <= sources, sources
    assert any(instr == "WORKDIR" for instr, _ in instructions), "entrypoint paths are relative to WORKDIR"
    env = dict(kv.split("=", 1) for instr, rest in instructions if instr == "ENV" for kv in rest.split())
    assert env.get("HF_HUB_OFFLINE") == "1"


def _default(value: str) -> str:
    """Resolve compose ``${VAR:-default}`` interpolation to its default."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def test_compose_backends():
    services = load_yaml(INFRA / "compose.yaml")["services"]
    assert {"qdrant", "elasticsearch", "minio"} <= set(services)

    def container_ports(svc: dict) -> set[int]:
        return {int(str(p).split(":")[-1].split("/")[0]) for p in svc.get("ports", [])}

    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert {6333, 6334} <= container_ports(services["qdrant"])
    es = services["elasticsearch"]
    assert re.search(r"elasticsearch:9\.\d+\.\d+$", _default(es["image"])), es["image"]  # = client major
    assert es["environment"]["discovery.type"] == "single-node"
    assert "xpack.security.enabled" in es["environment"]
    assert 9200 in container_ports(es)
    minio = services["minio"]
    assert {9000, 9001} <= container_ports(minio)
    assert ":9001" in minio["command"]


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycronjob.yaml"])
def test_deletes_beyond_the_guard_only_when_the_user_asks(name):
    text = (INFRA / name).read_text()
    for _, spec in job_specs():
        assert "--allow-deletes" not in spec["entrypoint"]
    assert "# entrypoint: python jobs/index.py --config configs/cluster.yaml --allow-deletes" in text
