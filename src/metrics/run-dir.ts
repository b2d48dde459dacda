import { createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, type WriteStream } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ErrorCode, PsError } from "../util/errors.js";

/**
 * The run directory: config.json, metrics.jsonl, summary.json, model/ (and logs/ of the role
 * processes). It is the contract between training, experiments, tests and benchmarks.
 */
export class RunDir {
  private metrics: WriteStream | null = null;

  private constructor(readonly path: string) {}

  /**
   * Check that `out` can hold a new run without creating anything: it must not exist or be an
   * empty folder, and its nearest existing ancestor must be a writable folder.
   */
  static check(out: string): string {
    const path = resolve(out);
    if (existsSync(path)) {
      const st = statSync(path);
      if (!st.isDirectory()) throw new PsError(ErrorCode.OUT_DIR, `--out ${out}: exists and is not a folder`);
      if (readdirSync(path).length > 0) throw new PsError(ErrorCode.OUT_DIR, `--out ${out}: folder is not empty (choose a new --out or remove it)`);
    }
    let p = path;
    while (!existsSync(p)) {
      const parent = dirname(p);
      if (parent === p) break;
      p = parent;
    }
    const st = statSync(p);
    if (!st.isDirectory()) throw new PsError(ErrorCode.OUT_DIR, `--out ${out}: ${p} is not a folder`);
    try {
      const probe = join(p, `.ps-train-write-test-${process.pid}`);
      writeFileSync(probe, "");
      rmSync(probe, { force: true });
    } catch {
      throw new PsError(ErrorCode.OUT_DIR, `--out ${out}: ${p} is not writable`);
    }
    return path;
  }

  static create(out: string): RunDir {
    const path = RunDir.check(out);
    try {
      mkdirSync(join(path, "logs"), { recursive: true });
    } catch (err) {
      throw new PsError(ErrorCode.OUT_DIR, `--out ${out}: cannot create it (${(err as Error).message})`);
    }
    return new RunDir(path);
  }

  /** An existing run directory, to go on writing to (--resume): metrics.jsonl is appended to. */
  static open(dir: string): RunDir {
    const path = resolve(dir);
    if (!existsSync(join(path, "config.json"))) throw new PsError(ErrorCode.OUT_DIR, `--resume ${dir}: not a run directory (no config.json)`);
    mkdirSync(join(path, "logs"), { recursive: true });
    return new RunDir(path);
  }

  /** Atomic JSON write (temp file + rename), so a reader never sees half a file. */
  writeJson(name: string, value: unknown): void {
    const file = join(this.path, name);
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(value, null, 2) + "\n");
    renameSync(tmp, file);
  }

  metric(record: Record<string, unknown>): void {
    if (!this.metrics) this.metrics = createWriteStream(join(this.path, "metrics.jsonl"), { flags: "a" });
    this.metrics.write(JSON.stringify(record) + "\n");
  }

  logFile(name: string): string {
    return join(this.path, "logs", name);
  }

  get modelDir(): string {
    return join(this.path, "model");
  }

  async close(): Promise<void> {
    const m = this.metrics;
    this.metrics = null;
    if (m) await new Promise<void>((res) => m.end(res));
  }
}
