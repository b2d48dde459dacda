import { createHmac, createPrivateKey, createPublicKey, diffieHellman, timingSafeEqual } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";
import { curveKeyPair } from "zeromq";
import { badOption } from "../util/errors.js";
import { z85Decode, z85Encode } from "./z85.js";

/**
 * The three identities of a run. Each process uses its own role's key pair for every socket it
 * opens: as a CURVE server on the socket it binds (coordinator ROUTER, shard ROUTER, allreduce
 * PULL) and as a CURVE client on the ones it connects.
 */
export const CURVE_ROLES = ["coordinator", "server", "worker"] as const;
export type CurveRole = (typeof CURVE_ROLES)[number];

/** The file of authorised client public keys: one `Z85KEY ROLE [comment]` per line, `#` comments. */
export const ALLOWLIST_FILE = "allowlist";

/**
 * Which roles' keys each role's binding socket admits: the coordinator's control ROUTER takes
 * shards and workers, a shard's ROUTER takes workers and the coordinator (evaluation), an
 * allreduce PULL takes other workers. A listed key of another role is refused there.
 */
export const ADMITS: Readonly<Record<CurveRole, readonly CurveRole[]>> = {
  coordinator: ["server", "worker"],
  server: ["worker", "coordinator"],
  worker: ["worker"],
};

/** An allowlist entry: the role the key acts as, and the rest of its line. */
export interface AllowedKey {
  role: CurveRole;
  comment: string;
}

export function publicKeyFile(role: CurveRole): string {
  return `${role}.public`;
}

export function secretKeyFile(role: CurveRole): string {
  return `${role}.secret`;
}

/** The environment variable through which a process hands its key folder (a path) to the processes it starts. */
export const CURVE_KEYS_ENV = "PS_TRAIN_CURVE_KEYS";

const KEY_CHARS = 40;

/** PKCS#8 DER prefix of a raw 32-byte X25519 private key (RFC 8410). */
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/** The Z85 public key that belongs to a Z85 CURVE secret key (CURVE keys are X25519 keys). */
export function publicKeyOf(secretZ85: string): string {
  const secret = z85Decode(secretZ85);
  if (!secret || secret.length !== 32) throw new Error("not a 40-character Z85 key");
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, secret]), format: "der", type: "pkcs8" });
  const x = createPublicKey(key).export({ format: "jwk" }).x;
  if (typeof x !== "string") throw new Error("X25519 public key export failed");
  return z85Encode(Buffer.from(x, "base64url"));
}

/** PKCS#8 private and SPKI public X25519 key objects from raw 32-byte Z85 keys. */
function x25519Private(z85: string) {
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, z85Decode(z85)!]), format: "der", type: "pkcs8" });
}

const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

function x25519Public(z85: string) {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, z85Decode(z85)!]), format: "der", type: "spki" });
}

function proofOf(shared: Buffer, role: string, rank: number): Buffer {
  return createHmac("sha256", shared).update(`ps-train hello ${role} ${rank}`).digest();
}

/**
 * A role process's proof, sent in its HELLO, that it holds the secret key of the role it claims:
 * an HMAC keyed with the X25519 secret its key pair shares with the coordinator's. Only holders
 * of the claimed role's secret key (or the coordinator's) can make it; the CURVE channel it
 * travels on keeps it from being seen and replayed.
 */
export function roleProof(keys: CurveKeys, role: CurveRole, rank: number): string {
  const shared = diffieHellman({ privateKey: x25519Private(keys.secretKey), publicKey: x25519Public(keys.serverKeys.coordinator) });
  return proofOf(shared, role, rank).toString("hex");
}

/**
 * The coordinator's check of a HELLO's proof: made with the secret key of some allowlisted key of
 * `role`. Without it an allowlisted worker key could claim to be a server shard.
 */
export function checkRoleProof(keys: CurveKeys, role: CurveRole, rank: number, proof: unknown): boolean {
  if (typeof proof !== "string" || !/^[0-9a-f]{64}$/.test(proof)) return false;
  const got = Buffer.from(proof, "hex");
  const me = x25519Private(keys.secretKey);
  for (const [key, entry] of keys.allowlist) {
    if (entry.role !== role) continue;
    const shared = diffieHellman({ privateKey: me, publicKey: x25519Public(key) });
    if (timingSafeEqual(proofOf(shared, role, rank), got)) return true;
  }
  return false;
}

/**
 * One process's CURVE material: its own key pair, the public keys of the three roles (a
 * connecting socket must know its server's), and the allowlist its binding sockets accept.
 * The secret key lives in a private field: JSON.stringify, pino and util.inspect never show it.
 */
export class CurveKeys {
  readonly #secretKey: string;

  constructor(
    readonly dir: string,
    readonly role: CurveRole,
    readonly publicKey: string,
    secretKey: string,
    /** the public key a client connecting to each role's binding sockets expects */
    readonly serverKeys: Readonly<Record<CurveRole, string>>,
    /** authorised client public keys (Z85) -> the role the allowlist gives them */
    readonly allowlist: ReadonlyMap<string, AllowedKey>,
  ) {
    this.#secretKey = secretKey;
  }

  get secretKey(): string {
    return this.#secretKey;
  }

  toJSON(): Record<string, unknown> {
    return { dir: this.dir, role: this.role, publicKey: this.publicKey, allowed: this.allowlist.size };
  }
}

function readKeyFile(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw badOption(`--curve-keys: cannot read the ${what} ${path} (${code ?? (err as Error).message}); make one with ps-train keys generate --out DIR`);
  }
  const key = text.trim();
  const raw = z85Decode(key);
  if (key.length !== KEY_CHARS || !raw) throw badOption(`--curve-keys: ${path} is not a ${KEY_CHARS}-character Z85 CURVE key`);
  return key;
}

/**
 * Parse an allowlist file: `Z85KEY ROLE [comment]` lines; blank lines and comment lines ignored.
 * Z85 has '#' in its alphabet, so a line is a comment only when it starts with '#' and is not a
 * key line.
 */
export function parseAllowlist(text: string, path: string): Map<string, AllowedKey> {
  const out = new Map<string, AllowedKey>();
  text.split("\n").forEach((line, i) => {
    const s = line.trim();
    if (s === "") return;
    const [key = "", ...name] = s.split(/\s+/);
    const isKey = key.length === KEY_CHARS && z85Decode(key) !== null;
    if (!isKey && s.startsWith("#")) return;
    if (!isKey) throw badOption(`--curve-keys: ${path} line ${i + 1}: not a ${KEY_CHARS}-character Z85 public key`);
    const [role = "", ...comment] = name;
    if (!(CURVE_ROLES as readonly string[]).includes(role)) throw badOption(`--curve-keys: ${path} line ${i + 1}: after the key comes the role it may act as, ${CURVE_ROLES.join(", ")} (got ${JSON.stringify(role)})`);
    out.set(key, { role: role as CurveRole, comment: comment.join(" ") });
  });
  return out;
}

/**
 * Load the key folder for a process of `role`. Every problem is one PS_ERR_BAD_OPTION line
 * naming the file: no folder, a missing or malformed key, a secret key that others may read, a
 * secret key that does not match its public key, an empty allowlist.
 */
export function loadCurveKeys(dirArg: string, role: CurveRole): CurveKeys {
  const dir = resolve(dirArg);
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw badOption(`--curve-keys must be a folder made by ps-train keys generate (got ${JSON.stringify(dirArg)}: not a folder)`);
  const secretPath = join(dir, secretKeyFile(role));
  const secretKey = readKeyFile(secretPath, `${role} secret key`);
  const mode = statSync(secretPath).mode & 0o777;
  if ((mode & 0o007) !== 0) throw badOption(`--curve-keys: the secret key ${secretPath} is open to other users (mode ${mode.toString(8).padStart(4, "0")}); chmod 600 it`);
  const serverKeys = {} as Record<CurveRole, string>;
  for (const r of CURVE_ROLES) serverKeys[r] = readKeyFile(join(dir, publicKeyFile(r)), `${r} public key`);
  if (publicKeyOf(secretKey) !== serverKeys[role]) throw badOption(`--curve-keys: ${secretPath} and ${join(dir, publicKeyFile(role))} are not one key pair`);
  const allowPath = join(dir, ALLOWLIST_FILE);
  let allowText: string;
  try {
    allowText = readFileSync(allowPath, "utf8");
  } catch (err) {
    throw badOption(`--curve-keys: cannot read the allowlist ${allowPath} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const allowlist = parseAllowlist(allowText, allowPath);
  if (allowlist.size === 0) throw badOption(`--curve-keys: the allowlist ${allowPath} lists no public key, so no peer could connect`);
  return new CurveKeys(dir, role, serverKeys[role], secretKey, serverKeys, allowlist);
}

export interface GeneratedKeys {
  dir: string;
  files: string[];
  publicKeys: Record<CurveRole, string>;
}

/**
 * `ps-train keys generate`: a key pair per role (secret keys mode 0600, public keys 0644, Z85
 * text) and an allowlist of the three public keys. Refuses to replace existing files unless
 * `force`; the folder is created mode 0700 when it does not exist.
 */
export function generateCurveKeys(dirArg: string, force: boolean): GeneratedKeys {
  const dir = resolve(dirArg);
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw badOption(`keys generate --out must be a folder (got ${JSON.stringify(dirArg)}: a file)`);
  const names = [...CURVE_ROLES.flatMap((r) => [secretKeyFile(r), publicKeyFile(r)]), ALLOWLIST_FILE];
  const present = names.filter((n) => existsSync(join(dir, n)));
  if (present.length > 0 && !force) throw badOption(`keys generate: ${dir} already holds ${present.join(", ")}; pass --force to replace them (every process then needs the new keys)`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw badOption(`keys generate: cannot create ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const publicKeys = {} as Record<CurveRole, string>;
  const files: string[] = [];
  const write = (name: string, text: string, mode: number): void => {
    const path = join(dir, name);
    // Remove first so that a replaced file gets this mode, and open exclusively: no window in
    // which a secret sits in a file others can read.
    if (force && existsSync(path)) unlinkSync(path);
    const fd = openSync(path, "wx", mode);
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    files.push(path);
  };
  const allow: string[] = [
    "# ps-train CURVE allowlist: the public keys that may connect to ps-train sockets, one per line:",
    "#   Z85KEY ROLE [comment]   ROLE (coordinator, server, worker) decides where the key is admitted:",
    "#   the coordinator takes server and worker keys, shards take worker and coordinator keys, workers take worker keys",
  ];
  for (const role of CURVE_ROLES) {
    const pair = curveKeyPair();
    publicKeys[role] = pair.publicKey;
    write(secretKeyFile(role), `${pair.secretKey}\n`, 0o600);
    write(publicKeyFile(role), `${pair.publicKey}\n`, 0o644);
    allow.push(`${pair.publicKey} ${role}`);
  }
  write(ALLOWLIST_FILE, `${allow.join("\n")}\n`, 0o644);
  return { dir, files, publicKeys };
}
