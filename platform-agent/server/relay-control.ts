/**
 * The port through which the control panel and the admin API show and change the agent's relay
 * connection (Settings → Security → Relay server, `/admin/api/v1/settings/relay`). The agent
 * implements it (agent/relay-connection.ts) and the process that runs both attaches it
 * (`PlatformServer.attachRelayControl`); the server itself knows nothing of the tunnel.
 */
import type { RelayConnectionSettings, RelayFlagField, relaySettingsView } from './relay-settings.js';

/** One relay as the page and the API show it. */
export interface RelayState {
  url: string;
  /** Tunnel connections up, of `connections`. */
  connected: number;
  connections: number;
  /** When the oldest connection now up came up. */
  since: string | null;
  lastError: string | null;
  lastErrorAt: string | null;
}

export interface RelayConnectionStatus {
  enabled: boolean;
  /** off, connecting (none up yet), connected (all up) or degraded (some up). */
  state: 'off' | 'connecting' | 'connected' | 'degraded';
  relays: RelayState[];
}

/** What `GET /admin/api/v1/settings/relay` answers. */
export interface RelayConnectionView {
  /** Stored settings, without the token. */
  settings: ReturnType<typeof relaySettingsView>;
  /** The stored settings with the flags on top: what the tunnel uses. */
  effective: ReturnType<typeof relaySettingsView>;
  flags: RelayFlagField[];
  overridden_by_flags: RelayFlagField[];
  status: RelayConnectionStatus;
}

export interface RelayControl {
  /** The stored settings (a copy). */
  settings(): RelayConnectionSettings;
  /** Fields set on the command line (the page shows them read-only). */
  flagFields(): RelayFlagField[];
  status(): RelayConnectionStatus;
  view(): RelayConnectionView;
  /** Validates, saves and applies a change (RelayError with `details.field` when a field is wrong). */
  update(patch: unknown, by: string, via: 'api' | 'console'): Promise<{ changed: string[] }>;
}

/** The part of the platform's store the agent keeps its relay settings in (a PlatformStore is one). */
export interface RelaySettingsStore {
  getConfig(key: string): Promise<unknown>;
  putConfig(key: string, value: unknown, now: number): Promise<void>;
}
