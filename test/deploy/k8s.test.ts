import { strict as assert } from "node:assert";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
import { REDIS_TLS_CA_ENV } from "../../src/cluster/redis/connection.js";
import { freePort } from "../../src/util/free-port.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const K8S = join(ROOT, "deploy", "k8s");
const KUSTOMIZATION = ["kustomization.yaml", "kustomization.yml", "Kustomization"].find((f) => existsSync(join(K8S, f))) ?? "kustomization.yaml";
/** The opt-in overlay: Redis over TLS only (kubectl apply -k deploy/k8s-redis-tls). */
const REDIS_TLS = join(ROOT, "deploy", "k8s-redis-tls");
const CLI = join(ROOT, "dist", "src", "cli", "main.js");

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
/** The overlay's Secret of Redis's certificate, its key and the CA. */
const REDIS_TLS_SECRET = "ps-train-redis-tls";

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
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  ports?: { name?: string; containerPort: number }[];
}
interface Probe {
  exec?: { command: string[] };
  tcpSocket?: { port: string | number };
  httpGet?: { path: string; port: string | number };
}
interface PodSpec {
  containers: (Container & { volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[] })[];
  volumes?: { name: string; secret?: { secretName: string; defaultMode?: number; items?: { key: string; path: string }[] } }[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; fsGroup?: number };
}

function podSpec(m: Manifest): PodSpec | null {
  const spec = m["spec"] as { template?: { spec?: PodSpec } } | undefined;
  return spec?.template?.spec ?? null;
}

type Doc = { file: string; m: Manifest };

/** Non-root, read-only root filesystem, requests and limits, probes on long-running pods. */
function checkPods(all: Doc[]): void {
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
}

/** The data of every ConfigMap and Secret, as envFrom hands it to a container. */
function envData(all: Doc[]): Record<string, string> {
  const data: Record<string, string> = {};
  for (const { m } of all) if (m.kind === "ConfigMap" || m.kind === "Secret") Object.assign(data, (m["data"] ?? {}) as object, (m["stringData"] ?? {}) as object);
  return data;
}

/**
 * Parses every ps-train container's args with ps-train's own parser, with the manifests'
 * environment; `paths` maps a path inside the pod (a Secret's mount) to a local one, in the args
 * and in the environment. Returns how many containers it checked.
 */
async function checkArgs(all: Doc[], paths: Record<string, string>): Promise<number> {
  const data = envData(all);
  const local = (a: string) => paths[a] ?? a;
  let checked = 0;
  for (const { file, m } of all) {
    const pod = podSpec(m);
    for (const c of pod?.containers ?? []) {
      if (!c.image.startsWith("ps-train")) continue;
      const env: NodeJS.ProcessEnv = {};
      for (const from of c.envFrom ?? []) if (from.configMapRef || from.secretRef) Object.assign(env, data);
      const fake: Record<string, string> = { "status.podIP": "10.1.2.3", "metadata.name": "pod-0" };
      for (const e of c.env ?? []) env[e.name] = e.value ?? fake[e.valueFrom?.fieldRef?.fieldPath ?? ""] ?? "";
      for (const [k, v] of Object.entries(env)) if (v !== undefined) env[k] = local(v);
      // Kubernetes expands $(VAR) in args from the container's environment.
      // A Secret's mount (the agents' --curve-keys, --redis-tls-ca): a local stand-in.
      const args = (c.args ?? []).map((a) => (paths[a] !== undefined ? local(a) : a.replace(/\$\(([A-Z0-9_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`)));
      // With the flag, it is the flag that must set the CA for the tasks an agent starts (not the ConfigMap's variable).
      if (args.includes("--redis-tls-ca")) delete env[REDIS_TLS_CA_ENV];
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
      const ca = args.indexOf("--redis-tls-ca");
      if (ca >= 0) assert.equal(env[REDIS_TLS_CA_ENV], args[ca + 1], `${file} ${c.name}: --redis-tls-ca is handed on (${REDIS_TLS_CA_ENV}) to the processes it starts`);
      checked++;
    }
  }
  return checked;
}

/** kubectl kustomize DIR, or null when kubectl is not installed (offline rendering needs its built-in kustomize). */
function kustomize(dir: string): Manifest[] | null {
  const which = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  if (which.error || which.status !== 0) return null;
  const r = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return (loadAll(r.stdout) as Manifest[]).filter((d) => d !== null && d !== undefined);
}

/** The value after the last `flag` in `args` (redis-server and ps-train: the last one wins). */
function lastFlag(args: readonly string[], flag: string): string | undefined {
  const i = args.lastIndexOf(flag);
  return i < 0 ? undefined : args[i + 1];
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
    checkPods(all);
  });

  it("the container arguments are accepted by ps-train's own parser (with the manifests' environment)", async () => {
    const keysDir = join(tempDir(), "curve");
    generateCurveKeys(keysDir, false);
    const checked = await checkArgs(all, { [CURVE_MOUNT]: keysDir });
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
    const docs = kustomize(K8S);
    if (!docs) {
      // the schema checks above still ran
      this.test!.title += " — SKIPPED: kubectl is not installed";
      return this.skip();
    }
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

/** Where a path inside a pod comes from: its volumeMount (read-only?) and, for a Secret, the key. */
function secretSource(pod: PodSpec, container: PodSpec["containers"][number], path: string): { secret: string; key: string; readOnly: boolean; mode: number | undefined; items: string[] | null } | null {
  const mount = container.volumeMounts?.find((v) => path.startsWith(`${v.mountPath.replace(/\/$/, "")}/`));
  if (!mount) return null;
  const vol = pod.volumes?.find((v) => v.name === mount.name);
  if (!vol?.secret) return null;
  const file = path.slice(mount.mountPath.replace(/\/$/, "").length + 1);
  const items = vol.secret.items ?? null;
  const key = items ? items.find((i) => i.path === file)?.key : file;
  if (key === undefined) return null;
  return { secret: vol.secret.secretName, key, readOnly: mount.readOnly === true, mode: vol.secret.defaultMode, items: items ? items.map((i) => i.key) : null };
}

describe("deploy/k8s-redis-tls: the Redis-over-TLS overlay (kubectl kustomize)", function () {
  let base: Manifest[] = [];
  let all: Doc[] = [];
  const FILE = "deploy/k8s-redis-tls (rendered)";
  const redisPod = () => podSpec(all.find(({ m }) => m.kind === "StatefulSet" && m.metadata.name === "redis")!.m)!;
  const redisContainer = () => redisPod().containers.find((c) => c.name === "redis")!;
  /** Pods that talk to Redis: a ps-train container, or the ConfigMap with PS_TRAIN_REDIS in their environment. */
  const clients = () =>
    all.filter(({ m }) => podSpec(m)?.containers.some((c) => c.image.startsWith("ps-train") || c.envFrom?.some((f) => f.configMapRef?.name === "ps-train-config")));

  before(function () {
    const b = kustomize(K8S);
    const t = b && kustomize(REDIS_TLS);
    // The overlay exists only rendered (a base and patches): without kubectl there is nothing to check.
    if (!b || !t) return this.skip();
    base = b;
    all = t.map((m) => ({ file: FILE, m }));
  });

  it("renders the base's objects, each valid against the Kubernetes schemas, in the ps-train namespace; its folder holds no manifest", () => {
    const names = (docs: Manifest[]) => docs.map((d) => `${d.apiVersion}/${d.kind}/${d.metadata.name}`).sort();
    assert.deepEqual(names(all.map(({ m }) => m)), names(base));
    for (const { m } of all) {
      if (m.kind !== "Namespace") assert.equal(m.metadata.namespace, "ps-train", `${m.kind}/${m.metadata.name}`);
      const Model = MODELS[`${m.apiVersion}/${m.kind}`];
      assert.ok(Model, `no schema model for ${m.apiVersion} ${m.kind}`);
      assert.doesNotThrow(() => new Model(m as never).validate(), (e: Error) => `${m.kind}/${m.metadata.name}: ${e.message}`);
    }
    // `kubectl apply -f deploy/k8s` stays the plain deployment, and `kubectl apply -R -f deploy` finds no YAML
    // in the overlay (its patches are inline in a file named Kustomization, as the base's is).
    const files = readdirSync(REDIS_TLS);
    assert.deepEqual(files.filter((f) => /\.(ya?ml|json)$/i.test(f)), [], `${REDIS_TLS}: ${files.join(", ")}`);
    const k = loadAll(readFileSync(join(REDIS_TLS, "Kustomization"), "utf8"))[0] as { resources: string[] };
    assert.deepEqual(k.resources, ["../k8s"]);
  });

  it("changes only the ConfigMap, Redis and the Redis clients; everything else is the base's", () => {
    const changed = new Set(["ConfigMap/ps-train-config", "StatefulSet/redis", ...clients().map(({ m }) => `${m.kind}/${m.metadata.name}`)]);
    assert.deepEqual([...changed].sort(), ["ConfigMap/ps-train-config", "Deployment/ps-train-agent", "Deployment/ps-train-agent-gpu", "Deployment/ps-train-scheduler", "Job/ps-train-submit-example", "StatefulSet/redis"]);
    for (const { m } of all) {
      const id = `${m.kind}/${m.metadata.name}`;
      const b = base.find((d) => `${d.kind}/${d.metadata.name}` === id)!;
      if (changed.has(id)) assert.notDeepEqual(m, b, `${id} is patched`);
      else assert.deepEqual(m, b, `${id} is the base's`);
    }
  });

  it("pods stay non-root with read-only root filesystems, limits and probes; the container arguments parse with ps-train's own parser", async () => {
    checkPods(all);
    const ca = envData(all)[REDIS_TLS_CA_ENV];
    assert.ok(ca, `the ConfigMap sets ${REDIS_TLS_CA_ENV}`);
    const dir = tempDir();
    const keysDir = join(dir, "curve");
    generateCurveKeys(keysDir, false);
    // the parser reads the CA file (a missing one is a bad option), it does not parse it
    writeFileSync(join(dir, "ca.crt"), "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
    const checked = await checkArgs(all, { [CURVE_MOUNT]: keysDir, [ca]: join(dir, "ca.crt") });
    assert.equal(checked, 4, `checked ${checked} containers`);
  });

  it("Redis serves TLS only (no plaintext port), with the Secret's certificate, key and CA mounted read-only, and keeps its password", () => {
    const pod = redisPod();
    const c = redisContainer();
    const args = c.args!;
    assert.equal(args[0], "redis-server");
    assert.equal(lastFlag(args, "--port"), "0", "no plaintext port: --port 0");
    const port = c.ports!.find((p) => p.name === "redis")!.containerPort;
    assert.equal(lastFlag(args, "--tls-port"), String(port), "TLS on the port the Services and NetworkPolicy use");
    assert.equal(lastFlag(args, "--tls-auth-clients"), "no", "clients authenticate with the password, not certificates");
    assert.equal(lastFlag(args, "--requirepass"), "$(REDIS_PASSWORD)", "password auth stays");
    assert.equal(lastFlag(args, "--appendonly"), "yes");
    for (const [flag, key] of [["--tls-cert-file", "tls.crt"], ["--tls-key-file", "tls.key"], ["--tls-ca-cert-file", "ca.crt"]] as const) {
      const path = lastFlag(args, flag);
      assert.ok(path, `redis-server ${flag}`);
      const src = secretSource(pod, c, path);
      assert.ok(src, `${flag} ${path} is in a mounted Secret`);
      assert.deepEqual([src.secret, src.key, src.readOnly], [REDIS_TLS_SECRET, key, true], `${flag} ${path}`);
      assert.equal((src.mode ?? 0o644) & 0o007, 0, `${flag}: the Secret's files are not world-readable`);
    }
    assert.equal(pod.securityContext?.fsGroup, 999, "with fsGroup Redis's group reads the 0440 files");
    // The probes work with TLS: a TCP connect, or redis-cli --tls verified against the mounted CA.
    const caPath = lastFlag(args, "--tls-ca-cert-file")!;
    for (const [which, probe] of [["liveness", c.livenessProbe], ["readiness", c.readinessProbe]] as const) {
      assert.ok(probe, `${which} probe`);
      if (probe.tcpSocket) {
        assert.equal(probe.tcpSocket.port, "redis", `${which}: TCP connect to the TLS port`);
        continue;
      }
      const cmd = probe.exec?.command.join(" ") ?? "";
      assert.match(cmd, /redis-cli /, `${which}: ${cmd}`);
      assert.ok(cmd.includes("--tls") && cmd.includes(`--cacert ${caPath}`), `${which} probe speaks TLS: ${cmd}`);
    }
    assert.ok(c.readinessProbe!.exec, "readiness is a PING (redis-cli), not just a TCP connect");
    // The NetworkPolicy still lets the pool in, on the TLS port.
    const policy = all.find(({ m }) => m.kind === "NetworkPolicy" && m.metadata.name === "redis-from-pool")!.m as unknown as { spec: { ingress: { ports: { port: number }[] }[] } };
    assert.deepEqual(policy.spec.ingress.map((i) => i.ports.map((p) => p.port)), [[port]]);
  });

  it("every Redis client uses rediss:// and --redis-tls-ca at the Secret's ca.crt, mounted read-only; only Redis gets the key", () => {
    const data = envData(all);
    const url = new URL(data["PS_TRAIN_REDIS"]!);
    assert.equal(url.protocol, "rediss:", `PS_TRAIN_REDIS ${url.href}`);
    assert.equal(url.hostname, "redis.ps-train.svc", "the Service, the name the certificate must carry");
    assert.equal(url.port, lastFlag(redisContainer().args!, "--tls-port"));
    const names: string[] = [];
    for (const { m } of clients()) {
      const pod = podSpec(m)!;
      for (const c of pod.containers) {
        const where = `${m.kind}/${m.metadata.name} ${c.name}`;
        const args = c.args ?? [];
        const redis = lastFlag(args, "--redis") ?? data["PS_TRAIN_REDIS"]!;
        assert.match(redis, /^rediss:\/\//, `${where}: --redis ${redis}`);
        const ca = lastFlag(args, "--redis-tls-ca");
        assert.ok(ca, `${where}: --redis-tls-ca`);
        assert.equal(data[REDIS_TLS_CA_ENV], ca, `${where}: ${REDIS_TLS_CA_ENV} of the ConfigMap (kubectl exec ... jobs) is the same file`);
        const src = secretSource(pod, c, ca);
        assert.ok(src, `${where}: --redis-tls-ca ${ca} is in a mounted Secret`);
        assert.deepEqual([src.secret, src.key, src.readOnly], [REDIS_TLS_SECRET, "ca.crt", true], `${where}: ${ca}`);
        assert.deepEqual(src.items, ["ca.crt"], `${where}: the CA certificate only, not the server's key`);
      }
      names.push(m.metadata.name);
    }
    assert.deepEqual(names.sort(), ["ps-train-agent", "ps-train-agent-gpu", "ps-train-scheduler", "ps-train-submit-example"]);
    // No other pod mounts the Secret's key.
    for (const { m } of all) {
      const pod = podSpec(m);
      for (const v of pod?.volumes ?? []) {
        if (v.secret?.secretName !== REDIS_TLS_SECRET) continue;
        const keys = v.secret.items?.map((i) => i.key) ?? ["tls.crt", "tls.key", "ca.crt"];
        if (keys.includes("tls.key")) assert.equal(`${m.kind}/${m.metadata.name}`, "StatefulSet/redis", "only Redis mounts tls.key");
      }
    }
  });

  describe("with a real redis-server, and certificates from make-certs.sh", function () {
    this.timeout(60_000);
    const dir = tempDir("ps-train-redis-tls-");
    const certs = join(dir, "certs");
    let server: ChildProcess | null = null;
    let port = 0;
    let probe: () => ReturnType<typeof spawnSync>;
    let data: Record<string, string> = {};

    before(async function () {
      const have = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8" }).status === 0;
      if (all.length === 0 || !have("redis-server", ["--version"]) || !have("redis-cli", ["--version"]) || !have("openssl", ["version"])) return this.skip();
      const made = spawnSync("sh", [join(REDIS_TLS, "make-certs.sh"), certs], { encoding: "utf8" });
      assert.equal(made.status, 0, made.stderr);
      data = envData(all);
      port = await freePort();
      // The StatefulSet's own command line, with the pod's paths mapped here and a free port.
      const c = redisContainer();
      const mountDir = (path: string) => path.slice(0, path.lastIndexOf("/"));
      const tlsMount = mountDir(lastFlag(c.args!, "--tls-cert-file")!);
      const local = (a: string) => (a.startsWith(`${tlsMount}/`) ? join(certs, a.slice(tlsMount.length + 1)) : a);
      const args = c.args!.map((a) => local(a.replace("$(REDIS_PASSWORD)", data["REDIS_PASSWORD"]!)));
      args[args.lastIndexOf("--tls-port") + 1] = String(port);
      args[args.lastIndexOf("--dir") + 1] = dir;
      server = spawn(args[0]!, [...args.slice(1), "--bind", "127.0.0.1", "-::1", "--logfile", join(dir, "redis.log")], { stdio: "ignore" });
      // The readiness probe, as the kubelet runs it (redis-cli's default port is 6379: here, ours).
      const cmd = c.readinessProbe!.exec!.command.map((a) => a.split(`${tlsMount}/`).join(`${certs}/`).replace(/redis-cli /g, `redis-cli -p ${port} `));
      probe = () => spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", env: { ...process.env, REDIS_PASSWORD: data["REDIS_PASSWORD"] } });
      const deadline = Date.now() + 10_000;
      while (probe().status !== 0) {
        if (Date.now() > deadline) throw new Error(`the readiness probe did not pass within 10 s (${cmd.join(" ")}; log: ${join(dir, "redis.log")})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    });

    after(async () => {
      const p = server;
      server = null;
      if (p && p.exitCode === null) {
        const exited = new Promise((r) => p.once("exit", r));
        p.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    });

    it("the certificate names the Service the ConfigMap points at (and localhost), signed by ca.crt", () => {
      const cert = new X509Certificate(readFileSync(join(certs, "tls.crt")));
      const ca = new X509Certificate(readFileSync(join(certs, "ca.crt")));
      assert.ok(cert.verify(ca.publicKey), "tls.crt is signed by ca.crt");
      assert.ok(ca.ca && !cert.ca);
      const host = new URL(data["PS_TRAIN_REDIS"]!).hostname;
      for (const name of [host, "redis", "redis.ps-train.svc.cluster.local", "redis-0.redis-headless.ps-train.svc", "localhost"]) assert.ok(cert.checkHost(name), `the certificate names ${name}`);
      assert.equal(cert.checkIP("127.0.0.1"), "127.0.0.1");
    });

    it("the readiness probe passes; a plaintext client gets nothing", () => {
      assert.equal(probe().status, 0);
      const plain = spawnSync("redis-cli", ["-p", String(port), "--no-auth-warning", "-a", data["REDIS_PASSWORD"]!, "ping"], { encoding: "utf8", timeout: 10_000 });
      assert.ok(!/PONG/.test(plain.stdout), `plaintext PING answered: ${plain.stdout}`);
    });

    it("ps-train connects with the ConfigMap's rediss:// URL and the --redis-tls-ca of the manifests, and needs the password", () => {
      const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("PS_TRAIN_") && k !== "REDIS_PASSWORD"));
      // A pod's environment, with the Service's name and port replaced by this machine's (the
      // certificate names localhost too), and the mounted CA (--redis-tls-ca) by the local file.
      const url = new URL(data["PS_TRAIN_REDIS"]!);
      url.hostname = "localhost";
      url.port = String(port);
      const env = { ...clean, ...data, PS_TRAIN_REDIS: url.href, [REDIS_TLS_CA_ENV]: join(certs, "ca.crt") };
      const cli = (args: string[], e: NodeJS.ProcessEnv) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: e, timeout: 60_000 });
      const ok = cli(["jobs", "--redis-tls-ca", join(certs, "ca.crt"), "--connect-timeout-ms", "20000"], env);
      assert.equal(ok.status, 0, ok.stderr);
      const noPassword = cli(["jobs", "--connect-timeout-ms", "20000"], { ...env, REDIS_PASSWORD: "" });
      assert.equal(noPassword.status, 1, noPassword.stderr);
      assert.match(noPassword.stderr, /refused authentication/);
    });
  });
});
