/**
 * The settings page's script (served as /assets/settings.js; the markup is
 * rendered by lib/agent/settings_html.ts). Thin on purpose: it sends the
 * switch's and the buttons' requests with the page's CSRF token, says what
 * happened in the live region (errors with their stable codes), and swaps
 * in the panel the server renders again — after each change and every few
 * seconds, so what the agent's own checks change shows up without a
 * reload. Keyboard focus stays on the control it was on.
 */

interface ApiError {
  error: { code: string; message: string };
}

const POLL_MS = 2000;

const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';
const panel = document.getElementById('panel') as HTMLElement;
const result = document.getElementById('result') as HTMLElement;
let busy = false;
let lastHtml = panel.innerHTML;

function say(text: string, error = false): void {
  result.textContent = text;
  result.classList.toggle('error', error);
}

async function post(path: string, body: unknown): Promise<unknown> {
  const res = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
    body: JSON.stringify(body),
  });
  const value = (await res.json().catch(() => null)) as unknown;
  if (!res.ok) {
    const e = (value as ApiError | null)?.error;
    throw new Error(e ? `${e.code}: ${e.message}` : `HTTP ${res.status}`);
  }
  return value;
}

async function refresh(): Promise<void> {
  const res = await fetch('/panel', { credentials: 'same-origin' });
  if (!res.ok) return;
  const html = await res.text();
  if (html === lastHtml) return;
  const focused = document.activeElement instanceof HTMLElement ? document.activeElement.id : '';
  panel.innerHTML = html;
  lastHtml = html;
  if (focused) document.getElementById(focused)?.focus();
}

async function act(run: () => Promise<string>, control: HTMLElement): Promise<void> {
  if (busy) return;
  busy = true;
  control.setAttribute('aria-busy', 'true');
  if (control instanceof HTMLButtonElement || control instanceof HTMLInputElement) control.disabled = true;
  try {
    say(await run());
  } catch (err) {
    say(`Refused — ${(err as Error).message}`, true);
  } finally {
    busy = false;
    await refresh().catch(() => undefined);
    const again = control.id ? document.getElementById(control.id) : null;
    if (again instanceof HTMLButtonElement || again instanceof HTMLInputElement) again.disabled = false;
  }
}

panel.addEventListener('click', (event) => {
  const button = (event.target as HTMLElement).closest<HTMLButtonElement>('button[data-action]');
  if (!button) return;
  const id = button.dataset.id ?? '';
  if (button.dataset.action === 'install') {
    void act(async () => {
      say(`Installing ${id}…`);
      await post('/api/install', { id });
      return `${id} is installed; it becomes active at the next restart.`;
    }, button);
  } else if (button.dataset.action === 'remove') {
    void act(async () => {
      const done = (await post('/api/remove', { id })) as { changed: Array<{ id: string; state: string }> };
      return done.changed
        .map((p) => `${p.id} ${p.state === 'removed' ? 'is removed' : 'goes away at the next restart'}.`)
        .join(' ');
    }, button);
  }
});

panel.addEventListener('change', (event) => {
  const input = event.target as HTMLInputElement;
  if (input.dataset.action !== 'auto-install') return;
  const on = input.checked;
  void act(async () => {
    await post('/api/auto-install', { on });
    return on ? 'Automatic installation is on.' : 'Automatic installation is off: new patches are listed for you to install.';
  }, input);
});

setInterval(() => {
  if (!busy && document.visibilityState === 'visible') void refresh().catch(() => undefined);
}, POLL_MS);
