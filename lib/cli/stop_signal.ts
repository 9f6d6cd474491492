/**
 * The wait of a command that serves in the foreground (`repo serve`,
 * `fleet serve`, the walkthrough's `--serve`) until the user stops it.
 * The first SIGINT or SIGTERM resolves it and takes both listeners off,
 * so a second signal ends the process as Node does by default while the
 * command is still closing.
 */

/** Resolves at the first SIGINT or SIGTERM. */
export function untilStopped(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
