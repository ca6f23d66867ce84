/** The stream limit both ends agree on: the agent's X-Mux-Max-Streams header and MuxSession.maxStreams. */
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { EventEmitter } from 'node:events';
import { defaults } from '../../shared/defaults.js';
import { MAX_STREAMS_HEADER, MuxSession, maxStreamsHeader, parseMaxStreamsHeader } from '../../shared/mux/session.js';

/** A stand-in socket: these tests open no stream and send nothing. */
const fakeWs = (): WebSocket => Object.assign(new EventEmitter(), { binaryType: 'nodebuffer' }) as unknown as WebSocket;

describe('X-Mux-Max-Streams', () => {
  it('states the configured limit, or the default', () => {
    expect(maxStreamsHeader({ maxStreamsPerConnection: 4096 })).toEqual({ [MAX_STREAMS_HEADER]: '4096' });
    expect(maxStreamsHeader({})).toEqual({ [MAX_STREAMS_HEADER]: String(defaults.maxStreamsPerConnection) });
  });

  it('parses strictly: digits only, 1..1,000,000', () => {
    expect(parseMaxStreamsHeader('1')).toBe(1);
    expect(parseMaxStreamsHeader('8192')).toBe(8192);
    expect(parseMaxStreamsHeader('1000000')).toBe(1_000_000);
    for (const bad of ['', '0', '01', '-5', '+5', ' 5', '5 ', '5.0', '1e3', '0x10', '1000001', '99999999', 'abc']) {
      expect(parseMaxStreamsHeader(bad), bad).toBeNull();
    }
    expect(parseMaxStreamsHeader(undefined)).toBeNull();
    expect(parseMaxStreamsHeader(['5', '6'])).toBeNull();
  });
});

describe('MuxSession.maxStreams', () => {
  it("is min(own, the peer's stated limit); without one, its own", () => {
    const own = new MuxSession(fakeWs(), { role: 'server', pingIntervalMs: 0, maxStreamsPerConnection: 10 });
    expect(own.maxStreams).toBe(10);
    own.setPeerMaxStreams(4);
    expect(own.maxStreams).toBe(4);
    own.setPeerMaxStreams(40);
    expect(own.maxStreams).toBe(10);
    const peer = new MuxSession(fakeWs(), { role: 'server', pingIntervalMs: 0, maxStreamsPerConnection: 10, peerMaxStreams: 3 });
    expect(peer.maxStreams).toBe(3);
    expect(() => peer.setPeerMaxStreams(0)).toThrow();
    expect(() => peer.setPeerMaxStreams(1.5)).toThrow();
  });
});
