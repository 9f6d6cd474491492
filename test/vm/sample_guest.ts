/**
 * The sample guest volume: a "browser" service whose configuration is
 * /etc/browser/version, and a "website" (busybox httpd with a CGI check on
 * 127.0.0.1) that refuses the browser versions listed in
 * /srv/site/broken-versions. It models the failure that motivates
 * revpatch: a patch whose every file is correct can still leave a system
 * that does not work, and only a health check on the booted system shows
 * it. The init prints the markers of guest.ts.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { BUSYBOX, MARKER } from './guest';

/**
 * The sample guest's volume tree in `dir`: busybox, /sbin/init, the
 * browser's configuration and the website. The init marks REACHED, prints
 * what it sees, starts the website (busybox httpd on 127.0.0.1 with a CGI
 * check), asks it with the browser's version as User-Agent, prints the
 * verdict and powers off.
 */
export async function writeSampleGuestTree(dir: string, options: { browserVersion: string; brokenVersions: string[] }): Promise<void> {
  const put = async (rel: string, content: string | Buffer, mode = 0o644) => {
    const file = path.join(dir, rel);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, content);
    await fs.chmod(file, mode);
  };
  for (const d of ['dev', 'proc', 'sys', 'tmp']) await fs.mkdir(path.join(dir, d), { recursive: true });
  await put('bin/busybox', await fs.readFile(BUSYBOX), 0o755);
  await fs.symlink('busybox', path.join(dir, 'bin/sh'));
  await put('sbin/init', sampleInit(), 0o755);
  await put('etc/browser/version', options.browserVersion + '\n');
  await put('srv/site/index.html', '<h1>the website</h1>\n');
  await put('srv/site/broken-versions', options.brokenVersions.map((v) => v + '\n').join(''));
  await put('srv/site/cgi-bin/check', sampleSiteCheck(), 0o755);
}

/** The sample volume's /sbin/init (PID 1 after switch_root). */
export function sampleInit(): string {
  return `#!/bin/sh
export PATH=/bin
echo "${MARKER.reached}"
version=$(cat /etc/browser/version)
echo "${MARKER.sees} /etc/browser/version=$version"
ifconfig lo 127.0.0.1 up
httpd -p 127.0.0.1:8080 -h /srv/site
n=0
until answer=$(wget -q -O - -U "Browser/$version" http://127.0.0.1:8080/cgi-bin/check 2>&1); do
  n=$((n + 1))
  if [ $n -gt 20 ]; then answer="REFUSED the website did not answer: $answer"; break; fi
  usleep 100000
done
case "$answer" in
  OK*) echo "${MARKER.healthy}" ;;
  *) echo "${MARKER.unhealthy} $answer" ;;
esac
sync
poweroff -f
`;
}

/** The website's check: refuses the browser versions it knows are broken. */
export function sampleSiteCheck(): string {
  return `#!/bin/sh
export PATH=/bin
version=\${HTTP_USER_AGENT#Browser/}
printf 'Content-Type: text/plain\\r\\n\\r\\n'
if [ -z "$version" ] || [ "$version" = "$HTTP_USER_AGENT" ]; then
  echo "REFUSED no browser version in the request"
elif grep -qxF "$version" /srv/site/broken-versions; then
  echo "REFUSED browser $version is known to break this site"
else
  echo "OK browser $version"
fi
`;
}

