/** A minimal observable value for React's useSyncExternalStore: immutable snapshots, no framework. */
export class Store<T> {
  private listeners = new Set<() => void>();
  constructor(private state: T) {}

  get = (): T => this.state;

  set(next: T | ((prev: T) => T)): void {
    const value = typeof next === 'function' ? (next as (p: T) => T)(this.state) : next;
    if (value === this.state) return;
    this.state = value;
    for (const l of [...this.listeners]) l();
  }

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };
}
