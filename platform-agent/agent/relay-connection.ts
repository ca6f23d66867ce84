/**
 * The platform's relay connection at run time: reads the stored settings
 * (server/relay-settings.ts) from the platform's store, lets command-line flags seed or override
 * them, and starts, restarts or stops the tunnel (a PlatformAgent serving the given target, the
 * built-in platform server) when an administrator changes them — no process restart. It is the
 * server's RelayControl (server/relay-control.ts): the control panel and the admin API show and
 * change it through that port.
 */
import type { Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import { PlatformAgent, type AgentConfig, type StreamTarget } from './agent.js';
import type { RelayConnectionStatus, RelayConnectionView, RelayControl, RelaySettingsStore, RelayState } from '../server/relay-control.js';
import {
  applyRelayPatch,
  defaultRelayConnection,
  FLAG_OF,
  overriddenFields,
  RELAY_CONFIG_KEY,
  relaySettingsView,
  storedRelayConnection,
  type RelayConnectionSettings,
  type RelayFlagField,
  type RelayFlags,
} from '../server/relay-settings.js';
import type { RelayTrust } from './tls-connect.js';

export interface RelayConnectionOptions {
  /** Where the tunnel's streams go (the built-in platform server). */
  target: StreamTarget;
  /** Where the settings are kept (the platform's store). */
  store: RelaySettingsStore;
  logger: Logger;
  clock: Clock;
  /** What the command line gave: each field wins over the stored one for this run. */
  flags: RelayFlags;
  /** Trust that only flags can give: `--insecure`, `--client-cert`/`--client-key`. */
  flagTrust?: Pick<RelayTrust, 'insecure' | 'clientCert'>;
  /** The rest of the agent's configuration (agent id, backoff, mux, drain time). */
  agent: Omit<AgentConfig, 'relays' | 'token' | 'trust' | 'connections' | 'target'>;
}

export class RelayConnection implements RelayControl {
  private stored: RelayConnectionSettings = { ...defaultRelayConnection };
  private agent: PlatformAgent | null = null;
  /** Agents replaced or turned off, finishing their in-flight streams. */
  private readonly draining = new Set<Promise<void>>();
  private closed = false;
  private followTimer: NodeJS.Timeout | undefined;
  /** Whether the last `refresh` failed (its warning is logged once per outage). */
  private refreshFailing = false;

  constructor(private readonly options: RelayConnectionOptions) {}

  /**
   * With a store shared by several instances: reads the stored settings every `intervalMs` and
   * applies a change another instance saved (`refresh`), so "Use Relay Server", the relays and
   * the token are one setting for the whole platform. Stops with `close`.
   */
  follow(intervalMs: number): void {
    clearInterval(this.followTimer);
    this.followTimer = setInterval(() => void this.refresh(), intervalMs);
    this.followTimer.unref();
  }

  /**
   * Reads the stored settings again and applies them if they differ from those in force (saved
   * through another instance). A store that cannot be read keeps the settings in force.
   */
  async refresh(): Promise<boolean> {
    let saved: RelayConnectionSettings | null;
    try {
      saved = storedRelayConnection(await this.options.store.getConfig(RELAY_CONFIG_KEY));
    } catch (err) {
      if (!this.refreshFailing)
        this.options.logger.warn(
          { event: 'relay_settings_refresh_failed', err: (err as Error).message },
          'relay connection settings could not be read again; those in force stay',
        );
      this.refreshFailing = true;
      return false;
    }
    this.refreshFailing = false;
    if (this.closed || saved === null || JSON.stringify(saved) === JSON.stringify(this.stored)) return false;
    const changed = (Object.keys(saved) as (keyof RelayConnectionSettings)[]).filter(
      (k) => JSON.stringify(saved[k]) !== JSON.stringify(this.stored[k]),
    );
    this.stored = saved;
    this.options.logger.info(
      { event: 'relay_settings_followed', fields: changed, enabled: saved.enabled },
      'relay connection settings changed through another instance: applied here too',
    );
    this.apply();
    return true;
  }

  /**
   * Loads the stored settings; on the first start with `--relay` (nothing stored) saves the
   * flags as the stored settings, with the connection on. Logs each flag that overrides a stored
   * value, then starts the tunnel if it is on.
   */
  async open(): Promise<void> {
    await this.load();
    this.start();
  }

  /** The first half of `open`: loads (or seeds) the settings and logs the overrides; starts nothing. */
  async load(): Promise<void> {
    const { store, flags, logger, clock } = this.options;
    const saved = storedRelayConnection(await store.getConfig(RELAY_CONFIG_KEY));
    if (saved) this.stored = saved;
    else if (flags.relays !== undefined) {
      this.stored = { ...defaultRelayConnection, ...flags, enabled: true };
      await store.putConfig(RELAY_CONFIG_KEY, this.stored, clock.now());
      logger.info(
        { event: 'relay_settings_seeded', fields: Object.keys(flags) },
        'relay connection settings saved from the command line (first start); change them in the control panel',
      );
    }
    for (const field of this.overrides())
      logger.warn(
        { event: 'relay_setting_overridden', setting: field, flag: FLAG_OF[field] },
        `${FLAG_OF[field]} overrides the relay setting "${field}" saved in the control panel, for this run`,
      );
    if (!this.stored.enabled)
      logger.info(
        { event: 'relay_off' },
        saved || flags.relays !== undefined
          ? 'the relay connection is off ("Use Relay Server" is unticked in the control panel)'
          : 'no relay configured: the tunnel is off; set it up in the control panel (Settings → Security → Relay server) or start with --relay',
      );
  }

  /** The second half of `open`: starts the tunnel if the settings say on. */
  start(): void {
    this.apply();
  }

  /** The stored settings (a copy). */
  settings(): RelayConnectionSettings {
    return { ...this.stored, relays: [...this.stored.relays] };
  }

  /** Stored settings with the flags on top: what the tunnel uses. */
  effective(): RelayConnectionSettings {
    return { ...this.stored, ...this.options.flags };
  }

  /** Fields whose flag differs from the stored value. */
  overrides(): RelayFlagField[] {
    return overriddenFields(this.stored, this.options.flags);
  }

  /** Fields set on the command line (the page shows them read-only). */
  flagFields(): RelayFlagField[] {
    return (Object.keys(this.options.flags) as RelayFlagField[]).filter((k) => this.options.flags[k] !== undefined);
  }

  /** For the API: stored settings without the token, what the flags override, and the live state. */
  view(): RelayConnectionView {
    return {
      settings: relaySettingsView(this.stored),
      effective: relaySettingsView(this.effective()),
      flags: this.flagFields(),
      overridden_by_flags: this.overrides(),
      status: this.status(),
    };
  }

  /**
   * Validates and saves a change, then applies it: on → the tunnel starts; off → it drains and
   * stops; a new relay, token, trust or connection count → it reconnects with them. Resolves once
   * saved and applied; a stopped tunnel finishes its in-flight streams in the background.
   */
  async update(patch: unknown, by: string, via: 'api' | 'console'): Promise<{ changed: string[] }> {
    const next = applyRelayPatch(this.stored, patch, { flags: this.options.flags });
    const changed = (Object.keys(next) as (keyof RelayConnectionSettings)[]).filter(
      (k) => JSON.stringify(next[k]) !== JSON.stringify(this.stored[k]),
    );
    if (changed.length === 0) return { changed };
    await this.options.store.putConfig(RELAY_CONFIG_KEY, next, this.options.clock.now());
    this.stored = next;
    this.options.logger.info(
      { event: 'relay_settings_changed', fields: changed, enabled: next.enabled, by, via },
      next.enabled ? 'relay connection settings changed' : 'relay connection turned off',
    );
    this.apply();
    return { changed };
  }

  /**
   * Brings the running tunnel in line with the effective settings: the running agent (if any) is
   * told to go away and drains in the background — a request that turned the tunnel off through
   * the tunnel itself still gets its answer — and a new one starts when the settings say on.
   */
  private apply(): void {
    const old = this.agent;
    this.agent = null;
    if (old) {
      const drained = old
        .stop(this.options.agent.drainTimeoutMs)
        .catch((err: Error) => this.options.logger.warn({ event: 'relay_stop_failed', err: err.message }, 'tunnel did not stop cleanly'))
        .finally(() => this.draining.delete(drained));
      this.draining.add(drained);
    }
    const s = this.effective();
    if (this.closed || !s.enabled || s.relays.length === 0 || s.token === null) return;
    const trust: RelayTrust = { ...this.options.flagTrust };
    if (s.relay_ca) trust.ca = s.relay_ca;
    if (s.relay_fingerprint) trust.fingerprint = s.relay_fingerprint;
    this.agent = new PlatformAgent(
      { ...this.options.agent, relays: s.relays, token: s.token, trust, connections: s.connections, target: this.options.target },
      this.options.logger,
    );
    this.agent.start();
  }

  /** The tunnel as it is now. */
  status(): RelayConnectionStatus {
    const s = this.effective();
    if (!this.agent) return { enabled: s.enabled, state: 'off', relays: [] };
    const relays = this.agent.clients.map((client): RelayState => {
      const slots = client.status();
      const up = slots.filter((x) => x.connected);
      const since = up.map((x) => x.since!.getTime()).sort((a, b) => a - b)[0];
      const failed = slots.filter((x) => x.lastErrorAt !== null).sort((a, b) => b.lastErrorAt!.getTime() - a.lastErrorAt!.getTime())[0];
      return {
        url: slots[0]?.relay ?? '',
        connected: up.length,
        connections: slots.length,
        since: since === undefined ? null : new Date(since).toISOString(),
        lastError: failed?.lastError ?? null,
        lastErrorAt: failed?.lastErrorAt?.toISOString() ?? null,
      };
    });
    const up = relays.reduce((n, r) => n + r.connected, 0);
    const all = relays.reduce((n, r) => n + r.connections, 0);
    return { enabled: s.enabled, state: up === 0 ? 'connecting' : up === all ? 'connected' : 'degraded', relays };
  }

  /** The running agent (tests wait on its connections). */
  get running(): PlatformAgent | null {
    return this.agent;
  }

  /** Stops the tunnel for good (shutdown): in-flight streams get `drainMs`. */
  async close(drainMs: number): Promise<void> {
    this.closed = true;
    clearInterval(this.followTimer);
    const running = this.agent;
    this.agent = null;
    await Promise.all([running?.stop(drainMs), ...this.draining]);
  }
}
