/**
 * `ps-train keys generate --out DIR [--force]`: the CURVE key pairs of the coordinator, server
 * and worker roles and the allowlist of their public keys, for --curve-keys DIR.
 */
import type { Argv } from "yargs";
import { generateCurveKeys } from "../transport/curve-keys.js";
import { badOption } from "../util/errors.js";

export function addKeysCommands<T>(y: Argv<T>): Argv<T> {
  return y.command(
    "keys <action>",
    "CURVE keys for --curve-keys: `keys generate --out DIR` writes a key pair per role (coordinator, server, worker) and DIR/allowlist",
    (c) =>
      c
        .positional("action", { type: "string", choices: ["generate"], describe: "generate: write new key pairs" })
        .option("out", { type: "string", requiresArg: true, describe: "Folder to write the keys to (created mode 0700)" })
        .option("force", { type: "boolean", describe: "Replace keys already in --out (every process then needs the new ones)", defaultDescription: "false" }),
    (argv) => {
      const out = argv["out"];
      if (typeof out !== "string" || out.trim() === "") throw badOption("keys generate needs --out DIR (the folder to write the keys to)");
      const g = generateCurveKeys(out, argv["force"] === true);
      const lines = [`wrote CURVE keys to ${g.dir} (secret keys mode 0600; never copy them anywhere but to the machines that run ps-train):`];
      for (const [role, key] of Object.entries(g.publicKeys)) lines.push(`  ${role.padEnd(11)} public key ${key}`);
      lines.push(`use them with: ps-train --curve-keys ${g.dir} ...   (and ps-train agent --curve-keys DIR on every agent)`);
      process.stdout.write(`${lines.join("\n")}\n`);
    },
  );
}
