/** Counts of non-negative integer observations (staleness, read gaps), with exact quantiles. */
export class IntHistogram {
  private counts: number[] = [];
  count = 0;
  sum = 0;
  max = 0;

  add(v: number, times = 1): void {
    const k = Math.max(0, Math.round(v));
    while (this.counts.length <= k) this.counts.push(0);
    this.counts[k] = (this.counts[k] ?? 0) + times;
    this.count += times;
    this.sum += k * times;
    if (k > this.max) this.max = k;
  }

  merge(other: IntHistogram | HistogramJson): void {
    const counts = other instanceof IntHistogram ? other.counts : other.counts;
    counts.forEach((c, k) => {
      if (c > 0) this.add(k, c);
    });
  }

  mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  quantile(q: number): number {
    if (this.count === 0) return 0;
    const target = Math.ceil(q * this.count);
    let acc = 0;
    for (let k = 0; k < this.counts.length; k++) {
      acc += this.counts[k] ?? 0;
      if (acc >= target) return k;
    }
    return this.max;
  }

  summary(): { mean: number; p99: number; max: number; count: number } {
    return { mean: this.mean(), p99: this.quantile(0.99), max: this.max, count: this.count };
  }

  toJSON(): HistogramJson {
    return { counts: [...this.counts] };
  }

  static from(json: HistogramJson): IntHistogram {
    const h = new IntHistogram();
    h.merge(json);
    return h;
  }
}

export interface HistogramJson {
  counts: number[];
}
