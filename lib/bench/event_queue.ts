/**
 * The fleet simulation's agenda: events keyed by simulated time, popped in
 * time order. Each event is one small integer (the simulation packs the
 * device and the kind of event into it); times and events sit in typed
 * arrays, so a fleet of 100,000 devices with millions of events costs no
 * garbage. Ties pop in a fixed order (the smaller payload first), so a run
 * is deterministic.
 */
export class EventQueue {
  private times: Float64Array;
  private payloads: Float64Array;
  private count = 0;

  constructor(capacity = 1024) {
    this.times = new Float64Array(Math.max(16, capacity));
    this.payloads = new Float64Array(Math.max(16, capacity));
  }

  get size(): number {
    return this.count;
  }

  /** The time of the next event, or Infinity when none is left. */
  peekTime(): number {
    return this.count > 0 ? this.times[0] : Infinity;
  }

  push(time: number, payload: number): void {
    if (this.count === this.times.length) this.grow();
    let i = this.count++;
    const { times, payloads } = this;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (times[parent] < time || (times[parent] === time && payloads[parent] <= payload)) break;
      times[i] = times[parent];
      payloads[i] = payloads[parent];
      i = parent;
    }
    times[i] = time;
    payloads[i] = payload;
  }

  /** Removes the earliest event and returns its payload (the queue must not be empty). */
  pop(): number {
    const { times, payloads } = this;
    const top = payloads[0];
    const n = --this.count;
    if (n > 0) {
      const time = times[n];
      const payload = payloads[n];
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= n) break;
        const right = child + 1;
        if (right < n && (times[right] < times[child] || (times[right] === times[child] && payloads[right] < payloads[child]))) {
          child = right;
        }
        if (time < times[child] || (time === times[child] && payload <= payloads[child])) break;
        times[i] = times[child];
        payloads[i] = payloads[child];
        i = child;
      }
      times[i] = time;
      payloads[i] = payload;
    }
    return top;
  }

  private grow(): void {
    const times = new Float64Array(this.times.length * 2);
    const payloads = new Float64Array(this.payloads.length * 2);
    times.set(this.times);
    payloads.set(this.payloads);
    this.times = times;
    this.payloads = payloads;
  }
}
