/**
 * Runs async sections one at a time per key, in this process: what `PlatformStore.exclusive`
 * builds on (the embedded store keys it by database file; the shared store takes a PostgreSQL
 * advisory lock inside it, so that one pooled connection per process waits for that lock).
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = before.then(() => mine);
    this.tails.set(key, tail);
    await before;
    try {
      return await fn();
    } finally {
      release();
      // The last one out leaves nothing behind: the map holds only keys with a section running or waiting.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
