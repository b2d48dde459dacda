import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

/** Logs on stderr: JSON lines, or pretty lines on a terminal. */
export function makeLogger(level: string): Logger {
  if (process.stderr.isTTY) return pino({ level }, pretty({ destination: 2, colorize: true, sync: true, singleLine: true }));
  return pino({ level }, pino.destination({ dest: 2, sync: true }));
}
