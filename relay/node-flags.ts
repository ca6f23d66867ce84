/**
 * The Node (V8) flags the relay process is started with: by the systemd unit
 * (`systemd/dmz-relay.service`), `npm run relay` and the benchmark. A test checks that the unit
 * and the npm script carry exactly these. The `relay` bin (`#!/usr/bin/env node`) cannot pass
 * flags: started that way the relay runs with Node's defaults, or with `NODE_OPTIONS`
 * (`--max-semi-space-size` is allowed there, `--heap-growing-percent` is not).
 *
 * Why (measured with the benchmark's load, README "Memory"): Node 20 grows each of V8's two
 * young-generation semi-spaces to 16 MiB under allocation pressure and lets the old generation
 * grow to ~4x its live size before a full GC, and keeps those pages once the load is gone. The
 * relay's live heap is ~10 MiB, so most of that is garbage: peak RSS 156-181 MiB with Node's
 * defaults, 107-114 MiB with these; 68-90 MiB 60 s after the load instead of 106-156. The
 * price: ~20 µs more main-thread GC per small request on the request path of today.
 *
 * They must be given when the process starts: `v8.setFlagsFromString('--max-semi-space-size=2')`
 * at run time leaves a young generation already configured for 16 MiB semi-spaces (measured).
 */
export const relayNodeFlags: readonly string[] = Object.freeze([
  // 2 MiB semi-spaces: ~8x more scavenges, each cheaper (1 MiB: +15% CPU per request).
  '--max-semi-space-size=2',
  // A full GC once the old generation has grown by half its live size: with only the smaller
  // young generation, objects promoted early pile up there (peaks up to 210 MiB measured).
  '--heap-growing-percent=50',
]);
