"""Checks pgplane's Kubernetes manifests (run by crates/cli/tests/cli/deploy.rs, or by hand with
`.venv/bin/python deploy/kubernetes/check.py`): renders deploy/kubernetes with `kubectl
kustomize`, validates every object against Kubernetes' published schemas (kubernetes-validate,
strict: no unknown fields) for the oldest and newest versions checked, and checks what the
deployment promises: replicas, probes, resources, a restrictive security context, a disruption
budget, a network policy (ingress only from labelled pods in labelled namespaces, egress only to
DNS, the metadata database and the allowed target networks and ports), a service account without
a token, secrets by reference only, and a metadata connection that verifies the server's
certificate. The pooler beside a target server (pooler/, its own kustomization) is rendered,
validated and checked the same way, and for ports, Service and policy that agree with its
settings.
The CloudNativePG example (a custom resource, whose schema Kubernetes does not publish) is
checked for the fields the operator requires and for the names the Deployment relies on.
Prints one line per check; exits 1 on the first failure."""

import pathlib
import shutil
import subprocess
import sys

import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
# The oldest Kubernetes still supported by its upstream, and the newest the package knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)
    print(f"ok: {message}")


def render(folder):
    if shutil.which("kubectl") is None:
        # Without kubectl (a machine that skips deploy/dev/prepare-tests.sh), what this
        # kustomization does by hand: its resources, in its namespace, with its name suffix
        # and image tag.
        print("kubectl not found: rendering the kustomization's resources without it")
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        objects = [d for r in kustomization["resources"] for d in yaml.safe_load_all((folder / r).read_text()) if d]
        for obj in objects:
            obj["metadata"]["name"] += kustomization.get("nameSuffix", "")
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kustomization["namespace"]
        (image,) = kustomization["images"]
        for obj in objects:
            for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"] == image["name"]:
                    container["image"] = f"{image['name']}:{image['newTag']}"
        return objects
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubectl kustomize: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def validate(objects):
    for version in VERSIONS:
        for obj in objects:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{name} against Kubernetes {version}: {e.message} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{name}: no schema in Kubernetes {version}")
        print(f"ok: {len(objects)} objects valid against Kubernetes {version} (strict)")


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    check(len(found) == 1, f"exactly one {kind}")
    return found[0]


def check_deployment(objects):
    kinds = sorted(o["kind"] for o in objects)
    check("Secret" not in kinds, "no Secret values in the manifests (secrets by reference)")
    deployment = one(objects, "Deployment")
    check(deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "pgplane:0.1.0", "the image is pgplane, tagged with the release")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(spec["replicas"] >= 2, "the Deployment runs at least two replicas")
    check(spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "rolling updates keep every replica until its successor is ready")
    (container,) = pod["containers"]
    probes = {p: container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    check(probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}, "liveness on /healthz, readiness on /readyz")
    env = check_pod(pod)
    check(mebibytes(container["resources"]["requests"]["memory"]) >= 64, "the memory request covers the benchmark's peak (64 MiB)")

    service = one(objects, "Service")
    check(service["spec"]["selector"].items() <= labels.items(), "the Service selects the Deployment's pods")
    budget = one(objects, "PodDisruptionBudget")
    check(budget["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the PodDisruptionBudget selects the pods")
    check(budget["spec"].get("minAvailable", 0) >= 1, "a disruption leaves at least one replica")
    policy = one(objects, "NetworkPolicy")
    check(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), "the NetworkPolicy selects the pods")
    check(sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"], "the NetworkPolicy restricts both directions")
    check_network_policy(policy, container, env)
    account = one(objects, "ServiceAccount")
    check(pod["serviceAccountName"] == account["metadata"]["name"], "the pods use pgplane's own service account")
    check(all(o["metadata"].get("namespace") == "pgplane" for o in objects if o["kind"] != "Namespace"), "everything in the pgplane namespace")
    return policy


def check_pod(pod):
    """The promises every pgplane pod keeps; returns its container's environment by name."""
    check(pod["automountServiceAccountToken"] is False, "no service account token in the pods")
    check(pod["securityContext"]["runAsNonRoot"] is True, "the pod runs as non-root")
    (container,) = pod["containers"]
    context = container["securityContext"]
    check(context["readOnlyRootFilesystem"] is True, "read-only root file system")
    check(context["allowPrivilegeEscalation"] is False, "no privilege escalation")
    check(context["capabilities"]["drop"] == ["ALL"], "every capability dropped")
    check(context["runAsUser"] != 0 and context["runAsNonRoot"] is True, "the container runs as a non-root user")
    resources = container["resources"]
    for part in ("requests", "limits"):
        check({"cpu", "memory"} <= set(resources[part]), f"cpu and memory {part}")
    check(mebibytes(resources["limits"]["memory"]) > mebibytes(resources["requests"]["memory"]), "the memory limit leaves headroom above the request")
    env = {e["name"]: e for e in container.get("env", [])}
    check(all("value" not in env[n] or "/" in env[n]["value"] for n in env if "SECRET" in n or "DATABASE_URL" in n),
          "secrets reach pgplane as file paths, never as values")
    check({"PGPLANE_DATABASE_URL_FILE", "PGPLANE_SECRET_KEY_FILE"} <= set(env), "database URL and sealing key given as files")
    secrets = {s["secret"]["name"] for v in pod["volumes"] for s in v.get("projected", {}).get("sources", []) if "secret" in s}
    check(secrets == {"pgplane", "pgplane-metadata-app", "pgplane-metadata-ca"},
          "secrets referenced by name: pgplane, pgplane-metadata-app, pgplane-metadata-ca")
    mounted = {s["secret"]["name"]: [i["path"] for i in s["secret"]["items"]]
               for v in pod["volumes"] for s in v.get("projected", {}).get("sources", []) if "secret" in s}
    check(env.get("PGPLANE_DATABASE_CA_FILE", {}).get("value") == "/etc/pgplane/" + mounted["pgplane-metadata-ca"][0],
          "the metadata connection verifies the server against the mounted CA (sslmode=verify-full)")
    return env


def check_pooler(objects):
    check(all(o["metadata"].get("namespace") == "pgplane" for o in objects), "the pooler in the pgplane namespace")
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(labels.get("app.kubernetes.io/component") == "pooler" and labels.get("pgplane.io/server"),
          "the pooler's pods are labelled with their component and their server")
    check(spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate",
          "one pooler per server, replaced (never two claiming its ports)")
    env = check_pod(pod)
    (container,) = pod["containers"]
    value = lambda name: env[name]["value"]
    run_dir = value("PGPLANE_POOLER_RUN_DIR")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(run_dir in mounts and volumes[mounts[run_dir]].get("emptyDir", {}).get("medium") == "Memory",
          "PgBouncer's files (logins, a fixed user's password) on a memory-backed emptyDir")
    first, last = (int(p) for p in value("PGPLANE_POOLER_PORTS").split("-"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(sorted(ports.values()) == list(range(first, last + 1)), "the container exposes exactly PGPLANE_POOLER_PORTS")
    service = one(objects, "Service")
    check(service["spec"]["selector"].items() <= labels.items(), "the pooler's Service selects its pods")
    check(sorted((p["port"], ports[p["targetPort"]]) for p in service["spec"]["ports"]) == [(p, p) for p in range(first, last + 1)],
          "the Service publishes every pool port as itself")
    check(value("PGPLANE_POOLER_ADVERTISE_HOST") == f"{service['metadata']['name']}.pgplane.svc",
          "pools' connection strings name the pooler's Service")
    policy = one(objects, "NetworkPolicy")
    check(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), "the pooler's NetworkPolicy selects its pods")
    check(sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"], "the pooler's NetworkPolicy restricts both directions")
    ingress = policy["spec"]["ingress"]
    check({p["port"] for rule in ingress for p in rule["ports"]} == set(ports), "ingress reaches only the pool ports")
    check(all("ipBlock" not in peer and peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
              for rule in ingress for peer in rule["from"]), "pool clients only from labelled pods in labelled namespaces")
    egress = policy["spec"]["egress"]
    host, port = value("PGPLANE_POOLER_SERVER").rsplit(":", 1)
    blocks = [(p["ipBlock"]["cidr"], [q["port"] for q in r["ports"]]) for r in egress for p in r["to"] if "ipBlock" in p]
    check(blocks == [(f"{host}/32", [int(port)])], "egress to targets only to the pooler's own server and port")
    check(len(egress) == 3, "egress only to DNS, the metadata database and the server")


def check_network_policy(policy, container, env):
    ports = {p["name"] for p in container["ports"]}
    ingress = policy["spec"]["ingress"]
    check(all(rule.get("from") and rule.get("ports") for rule in ingress),
          "every ingress rule names its sources and its ports")
    check({p["port"] for rule in ingress for p in rule["ports"]} == ports,
          "ingress reaches only the API and metrics ports")
    for rule in ingress:
        for peer in rule["from"]:
            check("ipBlock" not in peer and peer.get("namespaceSelector", {}).get("matchLabels")
                  and peer.get("podSelector", {}).get("matchLabels"),
                  f"ingress to {[p['port'] for p in rule['ports']]} only from labelled pods in labelled namespaces")
    egress = policy["spec"]["egress"]
    check(all(rule.get("to") and rule.get("ports") for rule in egress), "every egress rule names its destinations and ports")
    dns = [r for r in egress if any(p.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"} for p in r["to"])]
    check(len(dns) == 1 and {p["port"] for p in dns[0]["ports"]} == {53}, "egress to DNS on port 53 only")
    blocks = [r for r in egress if any("ipBlock" in p for p in r["to"])]
    check(len(blocks) == 1, "one egress rule for the target networks")
    cidrs = sorted(p["ipBlock"]["cidr"] for p in blocks[0]["to"])
    allowed = sorted(env["PGPLANE_ALLOWED_TARGET_NETWORKS"]["value"].split(","))
    check(cidrs == allowed and all("except" not in p["ipBlock"] for p in blocks[0]["to"]) and "0.0.0.0/0" not in cidrs,
          "egress address blocks are exactly PGPLANE_ALLOWED_TARGET_NETWORKS")
    target_ports = sorted(int(p) for p in env["PGPLANE_ALLOWED_TARGET_PORTS"]["value"].split(","))
    check(sorted(p["port"] for p in blocks[0]["ports"]) == target_ports,
          "egress ports to the targets are exactly PGPLANE_ALLOWED_TARGET_PORTS")
    check(len(egress) == 3, "egress only to DNS, the metadata database and the target networks")


def mebibytes(quantity):
    units = {"Mi": 1, "Gi": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


def check_cloudnativepg(policy):
    docs = [d for d in yaml.safe_load_all((HERE / "cloudnativepg" / "cluster.yaml").read_text()) if d]
    clusters = [d for d in docs if d.get("kind") == "Cluster"]
    check(len(clusters) == 1 and clusters[0]["apiVersion"] == "postgresql.cnpg.io/v1", "one CloudNativePG Cluster (postgresql.cnpg.io/v1)")
    cluster = clusters[0]
    spec = cluster["spec"]
    check(spec["instances"] >= 3, "the metadata database runs three instances (a primary and two standbys)")
    check(spec["storage"]["size"], "the Cluster has storage")
    owner = spec["bootstrap"]["initdb"]["owner"]
    check(owner and spec["bootstrap"]["initdb"]["database"], "the Cluster bootstraps pgplane's database and its owner")
    check(spec["backup"]["barmanObjectStore"]["destinationPath"], "the Cluster backs up to object storage")
    backups = [d for d in docs if d.get("kind") == "ScheduledBackup"]
    check(len(backups) == 1 and backups[0]["spec"]["cluster"]["name"] == cluster["metadata"]["name"], "a ScheduledBackup of that Cluster")
    # CloudNativePG names the application user's Secret <cluster>-app and labels the pods
    # cnpg.io/cluster=<cluster>: the Deployment and the NetworkPolicy rely on both.
    deployment = (HERE / "deployment.yaml").read_text()
    check(f"name: {cluster['metadata']['name']}-app" in deployment, "the Deployment reads the Cluster's application Secret")
    check(f"name: {cluster['metadata']['name']}-ca" in deployment, "the Deployment verifies the Cluster's certificate against its CA Secret")
    egress_pods = [p["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"] for p in rule["to"] if "podSelector" in p]
    check({"cnpg.io/cluster": cluster["metadata"]["name"]} in egress_pods, "the NetworkPolicy lets pgplane reach the Cluster's pods")


if __name__ == "__main__":
    objects = render(HERE)
    validate(objects)
    policy = check_deployment(objects)
    check_cloudnativepg(policy)
    pooler = render(HERE / "pooler")
    validate(pooler)
    check_pooler(pooler)
    print("all manifest checks passed")
