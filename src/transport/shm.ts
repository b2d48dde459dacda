import { closeSync, existsSync, mkdirSync, openSync, readSync, rmSync, statfsSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sweepDeadRunDirs } from "./endpoint.js";
import { WireError } from "./header.js";

/**
 * --transport shm: the parameter server's tensors go through files in shared memory (tmpfs,
 * /dev/shm) on one machine, while every message, tensor references included, still goes over
 * ZeroMQ ipc sockets. (Allreduce peer groups use the same folder, files `ar-...`: see
 * allreduce/peer-group.ts.) A 1 MiB tensor is written to a file in 0.06 ms and read back in 0.07 ms
 * here (one memcpy into and one out of the page cache), against about 0.5 ms to carry it one
 * way through a ZeroMQ ipc socket (docs/wire-protocol.md, "Transports", has the figures).
 *
 * Files (in shmDir(runTag), mode 0700):
 * - `g-w<rank>-s<shard>`: the gradient worker `rank` pushes to `shard`. A worker has one request
 *   in flight per shard at most, so the file is rewritten only after the shard has answered.
 * - `w-s<shard>-<slot>`: weights of one version of `shard`, shared by every reader of that
 *   version. A slot is rewritten only when each of its readers has sent its next message (so has
 *   read it), the rule the shard's reply buffers already follow for zero-copy ZeroMQ frames.
 *
 * A message whose tensor is in such a file carries the header flag SHM and one payload frame of
 * SHM_REF_BYTES (u32 slot, u32 zero) instead of the tensor; byteLength is the tensor's length.
 */
export const SHM_REF_BYTES = 8;

/**
 * Tensors smaller than this keep their frames under --transport shm: two system calls per
 * message cost more than the socket's copy there (bench:ps, one worker: a 4 KiB round 293-305
 * µs through files against 205-224 µs in frames; 64 KiB 210-282 against 286-364 µs).
 */
export const SHM_MIN_BYTES = 16 * 1024;

function shmRoot(): string {
  return existsSync("/dev/shm") && statSync("/dev/shm").isDirectory() ? "/dev/shm" : tmpdir();
}

/** The folder of a run's shared-memory files: /dev/shm where it exists, the temp folder otherwise. */
export function shmDir(runTag: string): string {
  return join(shmRoot(), `ps-train-${runTag}-tensors`);
}

/**
 * Whether a run's shared-memory files fit where they go, with room to spare. Parameter server:
 * each worker's gradient files (P floats in all) and the shards' weights slots (at most one per
 * reader plus the current version: (W + 1) P floats in all). Allreduce: each rank's files to its
 * peers, two collectives' worth, and one collective sends at most (log2 W + 2) P floats from a
 * rank (recursive doubling with a fold). A container's /dev/shm is often 64 MiB.
 * Returns null when they fit, else why not.
 */
export function shmShortfall(params: number, workers: number, comm: "ps" | "allreduce" = "ps"): string | null {
  const root = shmRoot();
  const need = (comm === "ps" ? 2 * workers + 1 : workers * 2 * (Math.ceil(Math.log2(Math.max(workers, 1))) + 2)) * params * 4;
  let free: number;
  try {
    const st = statfsSync(root);
    free = st.bavail * st.bsize;
  } catch {
    return null; // no figure to go by: the writes themselves will say
  }
  if (free >= need * 1.25 + (16 << 20)) return null;
  return `${root} has ${(free / 2 ** 20).toFixed(0)} MiB free, the run's shared-memory files need about ${(need / 2 ** 20).toFixed(0)} MiB`;
}

export function removeShmDir(runTag: string): void {
  rmSync(shmDir(runTag), { recursive: true, force: true });
}

/**
 * Remove the shared-memory folders of runs whose coordinator is gone: files in tmpfs hold memory
 * until they are deleted. Returns the folders removed.
 */
export function sweepStaleShmDirs(): string[] {
  return sweepDeadRunDirs(shmRoot(), "-tensors");
}

export function gradientFile(rank: number, shard: number): string {
  return `g-w${rank}-s${shard}`;
}

/** the start of the name of every weights slot of `shard` */
export function weightsFilePrefix(shard: number): string {
  return `w-s${shard}-`;
}

export function weightsFile(shard: number, slot: number): string {
  return `${weightsFilePrefix(shard)}${slot}`;
}

export function encodeShmRef(slot: number): Buffer {
  const b = Buffer.alloc(SHM_REF_BYTES);
  b.writeUInt32LE(slot >>> 0, 0);
  return b;
}

/** The slot a reference frame names; a frame of any other shape is a WireError. */
export function decodeShmRef(frame: Buffer | undefined): number {
  if (frame === undefined || frame.byteLength !== SHM_REF_BYTES)
    throw new WireError("shm-ref", `a shared-memory reference is one frame of ${SHM_REF_BYTES} bytes, got ${frame === undefined ? "none" : `${frame.byteLength} bytes`}`);
  if (frame.readUInt32LE(4) !== 0) throw new WireError("shm-ref", "a shared-memory reference's second word must be 0");
  return frame.readUInt32LE(0);
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * One process's open files in a run's shared-memory folder (descriptors are kept open: a
 * write or read is then one system call, no open or close per message).
 */
export class ShmFiles {
  private readonly fds = new Map<string, number>();

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** Write the tensor at byte `offset` of file `name` (created, or rewritten in place). */
  write(name: string, data: ArrayBufferView, offset = 0): void {
    let fd = this.fds.get(name);
    if (fd === undefined) {
      // "w+" creates or truncates the same inode: readers holding it open keep a valid descriptor
      fd = openSync(join(this.dir, name), "w+", 0o600);
      this.fds.set(name, fd);
    }
    const bytes = bytesOf(data);
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, offset + done);
  }

  /**
   * Fill `into` from byte `offset` of file `name`. A missing file or one shorter than that is a
   * WireError (the message that named it is refused; nothing is half-applied: `into` is a
   * scratch or receive buffer).
   */
  read(name: string, into: ArrayBufferView, offset = 0): void {
    let fd = this.fds.get(name);
    if (fd === undefined) {
      try {
        fd = openSync(join(this.dir, name), "r");
      } catch (err) {
        throw new WireError("shm-missing", `shared-memory file ${name} cannot be opened: ${(err as Error).message}`);
      }
      this.fds.set(name, fd);
    }
    const bytes = bytesOf(into);
    let done = 0;
    while (done < bytes.byteLength) {
      const n = readSync(fd, bytes, done, bytes.byteLength - done, offset + done);
      if (n === 0) throw new WireError("shm-length", `shared-memory file ${name} holds ${offset + done} bytes, the message says ${offset + bytes.byteLength}`);
      done += n;
    }
  }

  /** Close the descriptors of files whose name starts with `prefix` (a restarted peer's files are opened again). */
  forget(prefix: string): void {
    for (const [name, fd] of this.fds) {
      if (!name.startsWith(prefix)) continue;
      closeSync(fd);
      this.fds.delete(name);
    }
  }

  close(): void {
    this.forget("");
  }
}
