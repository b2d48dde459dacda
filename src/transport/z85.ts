/**
 * Z85 (ZeroMQ RFC 32): the text form of CURVE keys. A 32-byte key is 40 characters; zeromq.js
 * takes keys as Z85 text, while a ZAP request carries the client's key as 32 raw bytes.
 */
const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

/** Z85 text of `bytes` (its length must be a multiple of 4). */
export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new Error(`z85: ${bytes.length} bytes is not a multiple of 4`);
  let out = "";
  for (let i = 0; i < bytes.length; i += 4) {
    let v = ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!) >>> 0;
    const chunk = new Array<string>(5);
    for (let j = 4; j >= 0; j--) {
      chunk[j] = ALPHABET[v % 85]!;
      v = Math.floor(v / 85);
    }
    out += chunk.join("");
  }
  return out;
}

/** The bytes of Z85 `text`, or null when it is not valid Z85 (length, alphabet, overflow). */
export function z85Decode(text: string): Buffer | null {
  if (text.length % 5 !== 0) return null;
  const out = Buffer.alloc((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let v = 0;
    for (let j = 0; j < 5; j++) {
      const c = text.charCodeAt(i + j);
      const d = c < 128 ? DECODE[c]! : -1;
      if (d < 0) return null;
      v = v * 85 + d;
    }
    if (v > 0xffffffff) return null;
    out.writeUInt32BE(v, o);
  }
  return out;
}
