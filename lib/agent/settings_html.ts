/**
 * The device settings page's markup (docs/agent.md, "Settings page"),
 * rendered on the server from a SettingsView, so the page reads and works
 * before its script runs and the script stays thin: it only sends the
 * buttons' and the switch's requests and swaps in the panel this module
 * renders again (lib/agent/web/settings.page.ts).
 *
 * Everything variable is escaped here; there is no inline script or style
 * (the server's Content-Security-Policy allows neither). Contrast, labels
 * and keyboard use follow WCAG AA: every control is a native button or
 * checkbox with a visible label, results land in a live region.
 */

export interface InstalledView {
  id: string;
  title: string;
  severity: string;
  version: number;
  state: string;
  installedAt: string;
  /** When the health check confirmed it (from the audit trail), if it did. */
  activatedAt: string | null;
  removable: boolean;
  /** Live patches stacked on it, which a removal takes with it. */
  stacked: string[];
  reason: string | null;
}

export interface AvailableView {
  id: string;
  title: string;
  severity: string;
  version: number;
}

export interface SettingsView {
  autoInstall: boolean;
  installed: InstalledView[];
  /** Offered patches the last check did not install because the switch is off. */
  available: AvailableView[];
  /** When the agent last checked (ISO), null before its first check. */
  lastCheckAt: string | null;
  restart: {
    pending: boolean;
    activates: string[];
    removes: string[];
    deferrals: number;
    deferralsLeft: number | null;
    deadline: string | null;
    exhausted: boolean;
    reason: string;
  };
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const STATE_LABELS: Record<string, string> = {
  staged: 'Staged — active after the next restart',
  trial: 'On trial — waiting for the health check',
  active: 'Active',
  'pending-removal': 'Pending removal — goes away at the next restart',
  failed: 'Failed — rolled back',
  removed: 'Removed',
};

function time(iso: string | null): string {
  if (!iso) return '<span class="muted">—</span>';
  const text = iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, ' UTC');
  return `<time datetime="${escapeHtml(iso)}">${escapeHtml(text)}</time>`;
}

function list(ids: string[]): string {
  if (ids.length === 1) return ids[0];
  return `${ids.slice(0, -1).join(', ')} and ${ids[ids.length - 1]}`;
}

/** What pressing Remove on `p` does, in words (also the button's description). */
export function removalText(p: InstalledView): string {
  const when = p.state === 'staged' ? 'is removed now (it never ran)' : 'goes away at the next restart';
  if (p.stacked.length === 0) return `${p.id} ${when}.`;
  return `${p.id} ${when}, and with it ${list(p.stacked)}, stacked on it.`;
}

function installedRow(p: InstalledView): string {
  const live = p.state === 'staged' || p.state === 'trial' || p.state === 'active';
  let action = '<span class="muted">—</span>';
  if (live && p.removable) {
    const describe = `remove-what-${escapeHtml(p.id)}`;
    action =
      `<button type="button" class="danger" data-action="remove" data-id="${escapeHtml(p.id)}" id="remove-${escapeHtml(p.id)}" aria-describedby="${describe}">Remove ${escapeHtml(p.id)}</button>` +
      `<p class="hint" id="${describe}">${escapeHtml(removalText(p))}</p>`;
  } else if (live) {
    action = '<span class="muted">Not removable</span>';
  }
  return `<tr data-patch="${escapeHtml(p.id)}" data-state="${escapeHtml(p.state)}">
<th scope="row"><span class="title">${escapeHtml(p.title || p.id)}</span><br><code>${escapeHtml(p.id)}</code></th>
<td><span class="sev sev-${escapeHtml(p.severity)}">${escapeHtml(p.severity)}</span></td>
<td>v${p.version}</td>
<td class="state">${escapeHtml(STATE_LABELS[p.state] ?? p.state)}${p.reason && p.reason !== 'removed' && (p.state === 'failed' || p.state === 'removed' || p.state === 'pending-removal') ? `<br><span class="muted">${escapeHtml(p.reason)}</span>` : ''}</td>
<td>${time(p.installedAt)}</td>
<td>${time(p.activatedAt)}</td>
<td>${action}</td>
</tr>`;
}

function restartSection(v: SettingsView): string {
  const r = v.restart;
  if (!r.pending) {
    return `<section aria-labelledby="restart-h" class="card"><h2 id="restart-h">Next restart</h2><p id="restart-summary">Nothing changes at the next restart.</p></section>`;
  }
  const items: string[] = [];
  for (const id of r.activates) items.push(`<li>${escapeHtml(id)} becomes active (on trial until the health check passes)</li>`);
  for (const id of r.removes) items.push(`<li>${escapeHtml(id)} is removed</li>`);
  const left =
    r.exhausted
      ? 'The restart can no longer be put off.'
      : [
          r.deferralsLeft !== null ? `${r.deferralsLeft} deferral${r.deferralsLeft === 1 ? '' : 's'} left (${r.deferrals} used)` : 'no limit on the number of deferrals',
          r.deadline ? `deferring ends at ${time(r.deadline)}` : null,
        ]
          .filter(Boolean)
          .join('; ') + '.';
  return `<section aria-labelledby="restart-h" class="card notice" id="restart-notice">
<h2 id="restart-h">Restart required</h2>
<p id="restart-summary">A restart is pending. At the next restart:</p>
<ul>${items.join('')}</ul>
<p id="deferral-left">${left}</p>
</section>`;
}

/** The part of the page the script swaps in after each change (and on its polls). */
export function renderPanel(v: SettingsView): string {
  const installed = v.installed.filter((p) => p.state !== 'removed' && p.state !== 'failed');
  const history = v.installed.filter((p) => p.state === 'removed' || p.state === 'failed');
  const rows = (ps: InstalledView[]) => ps.map(installedRow).join('\n');
  const table = (ps: InstalledView[], caption: string, id: string) =>
    `<table id="${id}"><caption>${caption}</caption><thead><tr><th scope="col">Patch</th><th scope="col">Severity</th><th scope="col">Version</th><th scope="col">State</th><th scope="col">Installed</th><th scope="col">Activated</th><th scope="col">Action</th></tr></thead><tbody>${rows(ps)}</tbody></table>`;
  const available = v.autoInstall
    ? ''
    : `<section aria-labelledby="available-h" class="card" id="available">
<h2 id="available-h">Available patches</h2>
${
  v.available.length === 0
    ? `<p>No patch is waiting to be installed${v.lastCheckAt ? ` (last check ${time(v.lastCheckAt)})` : ' (the agent has not checked yet)'}.</p>`
    : `<ul class="available">${v.available
        .map(
          (a) =>
            `<li data-available="${escapeHtml(a.id)}"><span><span class="title">${escapeHtml(a.title || a.id)}</span> <code>${escapeHtml(a.id)}</code> v${a.version} <span class="sev sev-${escapeHtml(a.severity)}">${escapeHtml(a.severity)}</span></span> <button type="button" data-action="install" data-id="${escapeHtml(a.id)}" id="install-${escapeHtml(a.id)}">Install ${escapeHtml(a.id)}</button></li>`,
        )
        .join('')}</ul><p class="hint">An installed patch becomes active at the next restart.</p>`
}
</section>`;
  return `${restartSection(v)}
<section aria-labelledby="auto-h" class="card">
<h2 id="auto-h">Automatic installation</h2>
<p class="switch"><input type="checkbox" role="switch" id="auto-install" data-action="auto-install"${v.autoInstall ? ' checked' : ''} aria-describedby="auto-hint"><label for="auto-install">Install security patches automatically</label></p>
<p class="hint" id="auto-hint">${v.autoInstall ? 'Patches are downloaded and installed in the background; they become active at a restart.' : 'Off: new patches are listed below for you to install.'}</p>
</section>
${available}
<section aria-labelledby="installed-h" class="card">
<h2 id="installed-h">Installed patches</h2>
${installed.length === 0 ? '<p id="none-installed">No patches are installed.</p>' : table(installed, 'Patches on this device, bottom of the stack first', 'installed')}
${history.length === 0 ? '' : `<details><summary>Removed and rolled-back patches (${history.length})</summary>${table(history, 'Patches no longer installed', 'history')}</details>`}
</section>`;
}

/** The whole page; `csrf` goes in a meta tag the script sends back with every change. */
export function renderPage(v: SettingsView, csrf: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${escapeHtml(csrf)}">
<title>Background security patches — revpatch</title>
<link rel="stylesheet" href="/assets/settings.css">
<script src="/assets/settings.js" defer></script>
</head>
<body>
<header><h1>Background security patches</h1><p class="muted">Security patches for this device, applied at a restart and removable.</p></header>
<div id="result" role="status" aria-live="polite"></div>
<main id="panel">
${renderPanel(v)}
</main>
</body>
</html>
`;
}

/** The page's stylesheet (served as a file: the CSP forbids inline styles). */
export const SETTINGS_CSS = `
:root { color-scheme: light; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a; background: #f2f2f5; }
body { margin: 0 auto; max-width: 62rem; padding: 1rem 1.25rem 3rem; line-height: 1.45; }
header h1 { font-size: 1.6rem; margin: .5rem 0 .25rem; }
h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
.card { background: #fff; border-radius: 10px; padding: 1rem 1.25rem; margin: 1rem 0; box-shadow: 0 1px 2px rgba(0,0,0,.12); }
.notice { border-left: 6px solid #8a5a00; }
.muted, .hint { color: #4d4d4d; }
.hint { font-size: .9rem; margin: .25rem 0 0; }
table { width: 100%; border-collapse: collapse; font-size: .95rem; }
caption { text-align: left; color: #4d4d4d; padding-bottom: .4rem; }
th, td { text-align: left; vertical-align: top; padding: .5rem .4rem; border-top: 1px solid #d6d6db; }
thead th { border-top: none; font-weight: 600; }
.title { font-weight: 600; }
code { font-size: .85rem; }
.sev { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .8rem; font-weight: 600; border: 1px solid currentColor; }
.sev-critical { color: #a4000f; } .sev-high { color: #9a3a00; } .sev-moderate { color: #6b5200; } .sev-low { color: #2f5d2f; }
button { font: inherit; padding: .35rem .8rem; border-radius: 6px; border: 1px solid #0b4fa0; background: #0b57b0; color: #fff; cursor: pointer; }
button.danger { background: #fff; color: #a4000f; border-color: #a4000f; }
button:disabled { opacity: .6; cursor: progress; }
button:focus-visible, input:focus-visible { outline: 3px solid #1a73e8; outline-offset: 2px; }
.switch { display: flex; align-items: center; gap: .6rem; margin: 0; }
.switch input { width: 1.3rem; height: 1.3rem; }
ul.available { list-style: none; padding: 0; margin: 0; }
ul.available li { display: flex; justify-content: space-between; align-items: center; gap: 1rem; padding: .5rem 0; border-top: 1px solid #d6d6db; }
ul.available li:first-child { border-top: none; }
#result:empty { display: none; }
#result { margin: 1rem 0 0; padding: .6rem 1rem; border-radius: 8px; background: #e7f0fb; color: #0a3d7a; }
#result.error { background: #fdeaea; color: #8a0010; }
details { margin-top: 1rem; }
`;
