/**
 * `knit install-service coordinator|agent`: writes a systemd unit that runs
 * the coordinator or the agent in the foreground, so the service manager
 * supervises it (restart on failure, clean stop by SIGTERM, logs to journald
 * as our one-JSON-object-per-line stderr). No daemon mode exists or is needed.
 *
 * The unit is generated, not shipped: ExecStart names this Node.js and this
 * installation's `knit`, wherever npm put them.
 */
import { existsSync, mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags } from '../shared/cli/args.js';
import { isKnitError, KnitError } from '../shared/errors.js';

export type ServiceKind = 'coordinator' | 'agent';

export const SERVICE_HELP = `usage: knit install-service coordinator|agent [--dry-run] [--root DIR] [-- FLAGS…]
  Writes /etc/systemd/system/knit-<kind>.service running \`knit coordinator\` or \`knit up\`
  in the foreground under systemd (restart on failure, SIGTERM to stop, logs in journald).
  FLAGS after -- are passed to the command (e.g. -- --listen 0.0.0.0:8080, or -- --engine kernel).
  --dry-run     print the unit instead of writing it
  --root DIR    write under DIR instead of / (packaging, tests)
Then: systemctl daemon-reload && systemctl enable --now knit-<kind>`;

/** What goes after ExecStart: characters systemd would reinterpret are refused rather than escaped. */
function checkArg(a: string): string {
  if (!/^[A-Za-z0-9_@%+=:,./-]+$/.test(a)) throw new KnitError('KNIT_ERR_USAGE', `"${a.slice(0, 40)}" can't go in a unit file: use letters, digits and _@%+=:,./- only`);
  return a;
}

/** The unit file's text. `node` and `knit` are absolute paths. */
export function serviceUnit(kind: ServiceKind, o: { node: string; knit: string; args: string[] }): string {
  const args = o.args.map(checkArg);
  const common = [
    '[Service]',
    'Type=simple',
    // Restart on crashes, not on a usage error (exit 2): a bad flag would only loop.
    'Restart=on-failure',
    'RestartSec=2',
    'RestartPreventExitStatus=2',
    // SIGTERM is a clean stop for both (the agent leaves as `knit down` would).
    'KillSignal=SIGTERM',
    'TimeoutStopSec=15',
    `SyslogIdentifier=knit-${kind}`,
    'NoNewPrivileges=yes',
    'ProtectHome=yes',
    'PrivateTmp=yes',
  ];
  if (kind === 'coordinator') {
    const data = args.includes('--data') ? [] : ['--data', '/var/lib/knit-coordinator'];
    return [
      '[Unit]',
      'Description=Knit coordinator (identities, mesh addresses, peer maps, STUN, relay)',
      'After=network-online.target',
      'Wants=network-online.target',
      'StartLimitIntervalSec=60',
      'StartLimitBurst=5',
      '',
      ...common,
      `ExecStart=${[o.node, o.knit, 'coordinator', ...data, ...args].join(' ')}`,
      'DynamicUser=yes',
      'StateDirectory=knit-coordinator',
      'StateDirectoryMode=0700',
      'ProtectSystem=strict',
      // Binding :443 or :80 for the HTTP API needs this; nothing else does.
      'AmbientCapabilities=CAP_NET_BIND_SERVICE',
      'CapabilityBoundingSet=CAP_NET_BIND_SERVICE',
      '',
      '[Install]',
      'WantedBy=multi-user.target',
      '',
    ].join('\n');
  }
  const state = args.includes('--state') ? [] : ['--state', '/var/lib/knit'];
  return [
    '[Unit]',
    'Description=Knit agent (WireGuard mesh: NAT traversal, LAN discovery, roaming)',
    'After=network-online.target',
    'Wants=network-online.target',
    'StartLimitIntervalSec=60',
    'StartLimitBurst=5',
    '',
    ...common,
    `ExecStart=${[o.node, o.knit, 'up', ...state, ...args].join(' ')}`,
    'StateDirectory=knit',
    'StateDirectoryMode=0700',
    // Root for the tunnel interface, routes and nftables; nothing beyond networking.
    'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE',
    'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** This installation's `knit` launcher (bin/knit.js), resolved through npm's symlinks. */
function knitBin(): string {
  return realpathSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'knit.js'));
}

export async function runServiceCli(argv: string[]): Promise<number> {
  try {
    return installService(argv);
  } catch (err) {
    if (!isKnitError(err)) throw err;
    console.error(`knit install-service: ${err.message}`);
    return err.code === 'KNIT_ERR_USAGE' ? 2 : 1;
  }
}

function installService(argv: string[]): number {
  const dash = argv.indexOf('--');
  const own = dash < 0 ? argv.slice(1) : argv.slice(1, dash);
  const passed = dash < 0 ? [] : argv.slice(dash + 1);
  const { values, positionals } = parseFlags(own, { 'dry-run': { type: 'boolean' }, root: { type: 'string' } }, true);
  if (values.help) return console.log(SERVICE_HELP), 0;
  const kind = positionals[0];
  if ((kind !== 'coordinator' && kind !== 'agent') || positionals.length > 1) throw new KnitError('KNIT_ERR_USAGE', 'say which service: knit install-service coordinator|agent');
  const unit = serviceUnit(kind, { node: process.execPath, knit: knitBin(), args: passed });
  if (values['dry-run']) {
    process.stdout.write(unit);
    return 0;
  }
  const root = values.root ?? '/';
  if (!existsSync(root)) throw new KnitError('KNIT_ERR_USAGE', `--root ${root} does not exist`);
  const dir = join(root, 'etc', 'systemd', 'system');
  const path = join(dir, `knit-${kind}.service`);
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path, unit, { mode: 0o644 });
  } catch (err) {
    throw new KnitError('KNIT_ERR_IO', `cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  console.log(`wrote ${path}\nnext: systemctl daemon-reload && systemctl enable --now knit-${kind}`);
  return 0;
}
