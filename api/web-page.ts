import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import express, { Router } from 'express';
import helmet from 'helmet';

export interface WebPageOptions {
  /** Folder holding index.html, app.js and style.css (default: api/web/ of this package). */
  readonly dir?: string;
}

/**
 * Where api/web/ is: beside this module when it runs from source (tests), or two folders up when it
 * runs compiled from dist/api/ (tsc copies no HTML, JS or CSS into dist/).
 */
const CANDIDATES = [new URL('./web/', import.meta.url), new URL('../../api/web/', import.meta.url)];

export function findWebDir(): string {
  const found = CANDIDATES.map((url) => fileURLToPath(url)).find((dir) => existsSync(`${dir}index.html`));
  if (!found) {
    // An image built without api/web would serve an API without its page: say so at start.
    throw new Error(`The web page's files are missing: looked for index.html in ${CANDIDATES.map((url) => fileURLToPath(url)).join(' and ')}`);
  }
  return found;
}

/** The only paths served: nothing else under the folder is reachable, and other paths fall through. */
const PATHS = ['/', '/index.html', '/app.js', '/style.css'];

/**
 * The app's helmet policy for the page's files, with two changes. No `upgrade-insecure-requests`:
 * on plain HTTP at an address other than loopback (`docker compose up`, port 3000) the browser
 * would fetch app.js and style.css over https:// and show an empty page. And styles from the page's
 * own stylesheet only (it has no inline style and loads nothing from elsewhere).
 */
const pagePolicy = helmet.contentSecurityPolicy({
  useDefaults: true,
  directives: { 'upgrade-insecure-requests': null, 'style-src': ["'self'"] },
});

/**
 * `GET /`: the web page (plain HTML, one JavaScript module, one stylesheet; no build step). Open to
 * everyone: it holds no job data, and asks for a token when the API answers 401.
 */
export function createWebPageRouter(options: WebPageOptions = {}): Router {
  const dir = options.dir ?? findWebDir();
  const router = Router();
  router.get(
    PATHS,
    pagePolicy,
    express.static(dir, {
      index: 'index.html',
      redirect: false,
      dotfiles: 'ignore',
      // File names carry no content hash (no build step), so browsers revalidate every time
      // (a 304 via ETag): a deploy is seen at the next load, never a new page with an old script.
      cacheControl: false,
      setHeaders: (res) => {
        res.setHeader('Cache-Control', 'no-cache');
      },
    }),
  );
  return router;
}
