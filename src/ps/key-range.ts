/** A contiguous range [start, end) of the flat parameter vector. */
export interface KeyRange {
  start: number;
  end: number;
}

/**
 * Split `size` keys into `shards` contiguous ranges whose sizes differ by at most one
 * (ps-lite's uniform key-range division). Every key belongs to exactly one range; with more
 * shards than keys some ranges are empty.
 */
export function partitionKeys(size: number, shards: number): KeyRange[] {
  if (!Number.isInteger(size) || size < 0) throw new RangeError(`parameter count must be a non-negative integer (got ${size})`);
  if (!Number.isInteger(shards) || shards < 1) throw new RangeError(`shard count must be an integer >= 1 (got ${shards})`);
  const ranges: KeyRange[] = [];
  for (let k = 0; k < shards; k++) {
    ranges.push({ start: Math.floor((k * size) / shards), end: Math.floor(((k + 1) * size) / shards) });
  }
  return ranges;
}

export function rangeLength(r: KeyRange): number {
  return r.end - r.start;
}
