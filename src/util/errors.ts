/**
 * Stable error codes. Each code is listed in docs/errors.md with what the user should do.
 * A PsError that reaches the CLI is printed as one line and exits with `exitCode`.
 */
export const ErrorCode = {
  BAD_OPTION: "PS_ERR_BAD_OPTION",
  BAD_DATASET: "PS_ERR_BAD_DATASET",
  MODEL_SHAPE: "PS_ERR_MODEL_SHAPE",
  OUT_DIR: "PS_ERR_OUT_DIR",
  BAD_MESSAGE: "PS_ERR_BAD_MESSAGE",
  TIMEOUT: "PS_ERR_TIMEOUT",
  PEER_LOST: "PS_ERR_PEER_LOST",
  PROCESS_EXIT: "PS_ERR_PROCESS_EXIT",
  BACKEND: "PS_ERR_BACKEND",
  DIVERGED: "PS_ERR_DIVERGED",
  /** cluster mode: Redis unreachable, or an unknown job id */
  REDIS: "PS_ERR_REDIS",
  NO_JOB: "PS_ERR_NO_JOB",
  /** cluster mode: the job ended failed or cancelled (`submit --wait`) */
  JOB_FAILED: "PS_ERR_JOB_FAILED",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Codes that describe bad input from the user: exit 2 and nothing started. */
const USAGE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.BAD_OPTION,
  ErrorCode.BAD_DATASET,
  ErrorCode.MODEL_SHAPE,
  ErrorCode.OUT_DIR,
  ErrorCode.BACKEND,
  ErrorCode.NO_JOB,
]);

export class PsError extends Error {
  override readonly name = "PsError";
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
  get exitCode(): number {
    return USAGE_CODES.has(this.code) ? 2 : 1;
  }
}

export function badOption(message: string): PsError {
  return new PsError(ErrorCode.BAD_OPTION, message);
}

/** `err` as an Error: itself when it is one, else an Error with its text (what a catch gets is unknown). */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** One line for the terminal: the code and the message, no stack. */
export function errorLine(err: unknown): string {
  if (err instanceof PsError) return `ps-train: ${err.code}: ${err.message}`;
  if (err instanceof Error) return `ps-train: ${err.message}`;
  return `ps-train: ${String(err)}`;
}
