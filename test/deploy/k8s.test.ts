import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadAll } from "js-yaml";
import { ConfigMap, Namespace, Secret, Service } from "kubernetes-models/v1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { generateCurveKeys } from "../../src/transport/curve-keys.js";
import { tempDir } from "../helpers/run.js";
import { addClusterCommands, type ClusterHandlers } from "../../src/cli/cluster-commands.js";
import { buildParser } from "../../src/cli/options.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const K8S = join(ROOT, "deploy", "k8s");
const KUSTOMIZATION = ["kustomization.yaml", "kustomization.yml", "Kustomization"].find((f) => existsSync(join(K8S, f))) ?? "kustomization.yaml";

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };
interface Validatable {
  validate(): void;
}

/** The Kubernetes kinds deploy/k8s uses, with their schema models (kubernetes-models, offline). */
const MODELS: Record<string, new (data: never) => Validatable> = {
  "v1/Namespace": Namespace,
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "batch/v1/Job": Job,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
};

/** Where the agents mount the CURVE keys Secret. */
const CURVE_MOUNT = "/etc/ps-train/curve";

function manifestFiles(): string[] {
  return readdirSync(K8S)
    .filter((f) => /\.ya?ml$/.test(f) && f !== KUSTOMIZATION)
    .sort();
}

function load(file: string): Manifest[] {
  return loadAll(readFileSync(join(K8S, file), "utf8")).filter((d) => d !== null && d !== undefined) as Manifest[];
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  resources?: { requests?: Record<string, unknown>; limits?: Record<string, unknown> };
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; runAsNonRoot?: boolean };
  livenessProbe?: unknown;
  readinessProbe?: unknown;
}
interface PodSpec {
  containers: (Container & { volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[] })[];
  volumes?: { name: string; secret?: { secretName: string; defaultMode?: number; items?: { key: string; path: string }[] } }[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
}

function podSpec(m: Manifest): PodSpec | null {
  const spec = m["spec"] as { template?: { spec?: PodSpec } } | undefined;
  return spec?.template?.spec ?? null;
}

describe("deploy/k8s manifests", () => {
  const all = manifestFiles().flatMap((f) => load(f).map((m) => ({ file: f, m })));

  it("has a kustomization that lists every manifest file, and the kinds the issue asks for", () => {
    const k = loadAll(readFileSync(join(K8S, KUSTOMIZATION), "utf8"))[0] as { resources: string[]; namespace: string };
    assert.deepEqual([...k.resources].sort(), manifestFiles());
    assert.equal(k.namespace, "ps-train");
    const kinds = all.map(({ m }) => `${m.kind}/${m.metadata.name}`);
    for (const want of ["Namespace/ps-train", "StatefulSet/redis", "Service/redis", "Deployment/ps-train-scheduler", "Deployment/ps-train-agent", "Deployment/ps-train-agent-gpu", "ConfigMap/ps-train-config", "Secret/ps-train-secrets", "Job/ps-train-submit-example", "Secret/ps-train-curve-keys", "NetworkPolicy/default-deny-ingress", "NetworkPolicy/redis-from-pool", "NetworkPolicy/agents-from-agents"]) {
      assert.ok(kinds.includes(want), `${want} in ${kinds.join(", ")}`);
    }
  });

  for (const f of manifestFiles()) {
    it(`${f}: every document validates against the Kubernetes schemas (kubernetes-models)`, () => {
      const docs = load(f);
      assert.ok(docs.length > 0);
      for (const m of docs) {
        const Model = MODELS[`${m.apiVersion}/${m.kind}`];
        assert.ok(Model, `${f}: no schema model for ${m.apiVersion} ${m.kind}`);
        assert.doesNotThrow(() => new Model(m as never).validate(), (e: Error) => `${f} ${m.kind}/${m.metadata.name}: ${e.message}`);
      }
    });
  }

  it("a broken manifest does not validate (the check has teeth)", () => {
    const d = structuredClone(all.find(({ m }) => m.kind === "Deployment")!.m) as unknown as { spec: { selector?: unknown; replicas: unknown } };
    delete d.spec.selector;
    d.spec.replicas = "four";
    assert.throws(() => new Deployment(d as never).validate(), /selector|replicas/);
  });

  it("every pod runs as non-root with a read-only root filesystem, with requests and limits; long-running ones have probes", () => {
    for (const { file, m } of all) {
      const pod = podSpec(m);
      if (!pod) continue;
      const where = `${file} ${m.kind}/${m.metadata.name}`;
      assert.equal(pod.securityContext?.runAsNonRoot, true, `${where}: runAsNonRoot`);
      for (const c of pod.containers) {
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${where} ${c.name}: readOnlyRootFilesystem`);
        assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${where} ${c.name}: allowPrivilegeEscalation`);
        for (const r of ["cpu", "memory"]) {
          assert.ok(c.resources?.requests?.[r] !== undefined, `${where} ${c.name}: requests.${r}`);
          assert.ok(c.resources?.limits?.[r] !== undefined, `${where} ${c.name}: limits.${r}`);
        }
        if (m.kind !== "Job") assert.ok(c.livenessProbe && c.readinessProbe, `${where} ${c.name}: liveness and readiness probes`);
      }
    }
    const gpu = all.find(({ m }) => m.metadata.name === "ps-train-agent-gpu")!;
    const c = podSpec(gpu.m)!.containers[0]!;
    assert.equal(c.resources?.limits?.["nvidia.com/gpu"], 1);
    assert.equal(c.image, "ps-train-gpu:0.1.0");
    const redis = all.find(({ m }) => m.kind === "StatefulSet" && m.metadata.name === "redis")!;
    const rargs = podSpec(redis.m)!.containers[0]!.args!;
    assert.equal(rargs[rargs.indexOf("--appendonly") + 1], "yes", "redis keeps an append-only file");
    assert.ok((redis.m["spec"] as { volumeClaimTemplates?: unknown[] }).volumeClaimTemplates?.length, "redis has a PVC");
  });

  it("the container arguments are accepted by ps-train's own parser (with the manifests' environment)", async () => {
    const keysDir = join(tempDir(), "curve");
    generateCurveKeys(keysDir, false);
    const data: Record<string, string> = {};
    for (const { m } of all) if (m.kind === "ConfigMap" || m.kind === "Secret") Object.assign(data, (m["data"] ?? {}) as object, (m["stringData"] ?? {}) as object);
    let checked = 0;
    for (const { file, m } of all) {
      const pod = podSpec(m);
      for (const c of pod?.containers ?? []) {
        if (!c.image.startsWith("ps-train")) continue;
        const env: NodeJS.ProcessEnv = {};
        for (const from of c.envFrom ?? []) if (from.configMapRef || from.secretRef) Object.assign(env, data);
        const fake: Record<string, string> = { "status.podIP": "10.1.2.3", "metadata.name": "pod-0" };
        for (const e of c.env ?? []) env[e.name] = e.value ?? fake[e.valueFrom?.fieldRef?.fieldPath ?? ""] ?? "";
        // Kubernetes expands $(VAR) in args from the container's environment.
        // The agents' --curve-keys is the Secret's mount: here, a folder of freshly generated keys.
        const args = (c.args ?? []).map((a) => (a === CURVE_MOUNT ? keysDir : a.replace(/\$\(([A-Z0-9_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`)));
        const seen: string[] = [];
        const record = (name: string) => async (o: unknown) => {
          seen.push(name);
          if (name === "agent") {
            const a = o as { host: string; name: string; roles: string[] };
            assert.equal(a.host, "10.1.2.3");
            assert.equal(a.name, "pod-0");
          }
          if (name === "submit") assert.equal((o as { config: { transport: string } }).config.transport, "tcp");
          const redis = (o as { redis: string }).redis;
          assert.equal(redis, data["PS_TRAIN_REDIS"], `${file}: --redis comes from the ConfigMap`);
        };
        const handlers: ClusterHandlers = { scheduler: record("scheduler"), agent: record("agent"), submit: record("submit"), jobs: record("jobs"), job: record("job"), cancel: record("cancel") };
        await addClusterCommands(buildParser(args, { env, train: () => assert.fail(`${file}: ${args.join(" ")} ran the train command`) }), handlers, env).parseAsync();
        assert.deepEqual(seen, [args[0]], `${file} ${c.name}: ${args.join(" ")}`);
        checked++;
      }
    }
    assert.ok(checked >= 4, `checked ${checked} containers`);
  });

  it("agents mount the CURVE keys Secret read-only and run with --curve-keys at the mount; nothing else gets it", () => {
    const secret = all.find(({ m }) => m.kind === "Secret" && m.metadata.name === "ps-train-curve-keys")!.m;
    const keys = Object.keys((secret["stringData"] ?? secret["data"]) as object).sort();
    assert.deepEqual(keys, ["allowlist", "coordinator.public", "coordinator.secret", "server.public", "server.secret", "worker.public", "worker.secret"]);
    const users: string[] = [];
    for (const { file, m } of all) {
      const pod = podSpec(m);
      if (!pod) continue;
      const vol = pod.volumes?.find((v) => v.secret?.secretName === "ps-train-curve-keys");
      if (!vol) continue;
      users.push(m.metadata.name);
      assert.equal(vol.secret!.defaultMode, 0o400, `${file}: the keys are readable by the owner (and, with fsGroup, the group) only`);
      const c = pod.containers[0]!;
      const mount = c.volumeMounts?.find((v) => v.name === vol.name);
      assert.equal(mount?.mountPath, CURVE_MOUNT, file);
      assert.equal(mount?.readOnly, true, `${file}: mounted read-only`);
      const args = c.args ?? [];
      assert.equal(args[args.indexOf("--curve-keys") + 1], CURVE_MOUNT, `${file}: the agent runs with --curve-keys ${CURVE_MOUNT}`);
      // Least privilege: an agent gets the secret keys of the roles it runs (--roles), no other.
      const roles = (args[args.indexOf("--roles") + 1] ?? "coordinator,server,worker").split(",");
      const files = vol.secret!.items ? vol.secret!.items.map((i) => i.path) : keys;
      for (const r of ["coordinator", "server", "worker"]) assert.equal(files.includes(`${r}.secret`), roles.includes(r), `${file}: ${r}.secret mounted iff --roles has ${r}`);
      for (const f of ["allowlist", "coordinator.public", "server.public", "worker.public"]) assert.ok(files.includes(f), `${file}: ${f} mounted`);
    }
    assert.deepEqual(users.sort(), ["ps-train-agent", "ps-train-agent-gpu"]);
  });

  it("network policies: default deny ingress, Redis only from the pool, agents only from agents", () => {
    type Policy = { spec: { podSelector: { matchLabels?: Record<string, string> }; policyTypes: string[]; ingress?: { from?: { podSelector?: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values: string[] }[] } }[]; ports?: { port: number }[] }[] } };
    const policy = (name: string) => all.find(({ m }) => m.kind === "NetworkPolicy" && m.metadata.name === name)!.m as unknown as Policy;
    const deny = policy("default-deny-ingress").spec;
    assert.deepEqual(deny.podSelector, {}, "selects every pod of the namespace");
    assert.deepEqual(deny.policyTypes, ["Ingress"]);
    assert.equal(deny.ingress, undefined, "and lets nothing in");
    const redis = policy("redis-from-pool").spec;
    assert.equal(redis.podSelector.matchLabels?.["app.kubernetes.io/name"], "redis");
    assert.deepEqual(redis.ingress?.map((i) => i.ports?.map((p) => p.port)), [[6379]]);
    const from = redis.ingress![0]!.from![0]!.podSelector!.matchExpressions![0]!;
    assert.deepEqual([...from.values].sort(), ["ps-train-agent", "ps-train-scheduler", "ps-train-submit"]);
    // Every pod that talks to Redis carries one of those names.
    for (const { m } of all) {
      const pod = podSpec(m);
      if (!pod || !pod.containers.some((c) => c.image.startsWith("ps-train"))) continue;
      const labels = (m["spec"] as { template?: { metadata?: { labels?: Record<string, string> } } }).template?.metadata?.labels;
      assert.ok(from.values.includes(labels?.["app.kubernetes.io/name"] ?? ""), `${m.metadata.name} may reach Redis`);
    }
    const agents = policy("agents-from-agents").spec;
    assert.equal(agents.podSelector.matchLabels?.["app.kubernetes.io/name"], "ps-train-agent");
    assert.deepEqual(agents.ingress?.map((i) => i.from?.map((f) => f.podSelector?.matchLabels)), [[{ "app.kubernetes.io/name": "ps-train-agent" }]]);
  });

  it("kubectl kustomize deploy/k8s renders every resource into the ps-train namespace", function () {
    const which = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
    if (which.error || which.status !== 0) {
      // Offline rendering needs kubectl's built-in kustomize; the schema checks above still ran.
      this.test!.title += " — SKIPPED: kubectl is not installed";
      this.skip();
    }
    const r = spawnSync("kubectl", ["kustomize", K8S], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const docs = loadAll(r.stdout) as Manifest[];
    assert.equal(docs.length, all.length);
    for (const d of docs) {
      if (d.kind !== "Namespace") assert.equal(d.metadata.namespace, "ps-train", `${d.kind}/${d.metadata.name}`);
      const Model = MODELS[`${d.apiVersion}/${d.kind}`]!;
      new Model(d as never).validate();
    }
    const agent = docs.find((d) => d.metadata.name === "ps-train-agent")!;
    assert.equal(podSpec(agent)!.containers[0]!.image, "ps-train:0.1.0", "the image tag comes from the kustomization");
  });
});
