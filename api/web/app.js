// ferry's web page: submit downloads, list recent jobs, follow one job's progress and live log.
// Plain browser JavaScript, no build step, no dependencies. Everything the API returns is put on
// the page with textContent, never as HTML (job URLs and log lines come from users and Jenkins).
/* global document, window, sessionStorage, fetch, EventSource, URL, URLSearchParams, performance */

const API = '/api/v1/jenkins';
const TOKEN_KEY = 'ferry.token';
const FINAL = new Set(['completed', 'failed', 'cancelled']);
/** Milliseconds between refreshes of the jobs table and of the open job's status. */
const LIST_POLL_MS = 2_000;
/** Progress samples kept for the speed: a moving window, so a stall shows within seconds. */
const SPEED_WINDOW_MS = 10_000;
/** Reopening a stream the browser gave up on (an HTTP error, e.g. a 503 during a Redis outage). */
const REOPEN_MIN_MS = 1_000;
const REOPEN_MAX_MS = 10_000;

const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`missing #${id}`);
  return element;
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- the API, with the session's token -------------------------------------------------------

let token = sessionStorage.getItem(TOKEN_KEY);

async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    cache: 'no-store',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error?.code, data?.error?.message ?? `HTTP ${response.status}`);
    if (response.status === 401) askForToken(token ? 'That token was not accepted.' : '');
    throw error;
  }
  return { status: response.status, data };
}

function askForToken(message) {
  if (token) sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  stopAll();
  $('app').hidden = true;
  $('forget-token').hidden = true;
  $('token-section').hidden = false;
  $('token-error').textContent = message;
  $('token-input').focus();
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token-input').value.trim();
  if (!value) return;
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  $('token-input').value = '';
  $('token-error').textContent = '';
  void start();
});

$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  window.location.reload();
});

// ---- formatting -------------------------------------------------------------------------------

/** Decimal units with one decimal, as the workers write sizes in the log (`6.0 kB`). */
function formatBytes(bytes) {
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const formatTime = (iso) => (iso ? new Date(iso).toLocaleString() : '');
const shortId = (id) => id.slice(-12);

/** The build's path without the Jenkins origin: `job/QA_Release_6.4/job/main-regression/216/`. */
function buildPath(url) {
  if (!url) return '';
  try {
    return new URL(url).pathname.replace(/^\//, '');
  } catch {
    return url;
  }
}

/** Fraction done, by bytes when sizes are known, else files, else modules. */
function fraction(progress) {
  if (!progress) return 0;
  if (progress.bytes_total > 0) return Math.min(1, progress.bytes_done / progress.bytes_total);
  if (progress.files_total > 0) return Math.min(1, progress.files_done / progress.files_total);
  if (progress.modules_total > 0) return Math.min(1, progress.modules_done / progress.modules_total);
  return 0;
}

function statusBadge(element, status) {
  element.textContent = status;
  element.className = `status status-${status}`;
}

// ---- the jobs table ---------------------------------------------------------------------------

let listTimer = null;

async function refreshList() {
  try {
    const { data } = await api(`${API}/downloads?limit=20`);
    renderList(data.jobs);
    $('jobs-error').textContent = '';
  } catch (error) {
    if (error.status !== 401) $('jobs-error').textContent = `Could not list jobs: ${error.message}`;
  }
}

function renderList(jobs) {
  const body = $('jobs').tBodies[0];
  const rows = jobs.map((job) => {
    const row = document.createElement('tr');
    row.dataset.id = job.id;
    if (job.id === current?.id) row.classList.add('selected');
    const link = document.createElement('a');
    link.href = `#job=${job.id}`;
    link.textContent = shortId(job.id);
    link.title = job.id;
    const status = document.createElement('span');
    statusBadge(status, job.status);
    const bar = document.createElement('progress');
    bar.max = 1;
    bar.value = job.status === 'completed' ? 1 : fraction(job.progress);
    const cells = [
      link,
      status,
      job.release ?? '',
      job.kind === 'batch' ? 'batch' : buildPath(job.job_url),
      bar,
      formatTime(job.started_at),
    ];
    for (const content of cells) {
      const cell = document.createElement('td');
      if (typeof content === 'string') cell.textContent = content;
      else cell.append(content);
      row.append(cell);
    }
    return row;
  });
  body.replaceChildren(...rows);
  if (jobs.length === 0) {
    const row = document.createElement('tr');
    const cell = document.createElement('td');
    cell.colSpan = 6;
    cell.className = 'hint';
    cell.textContent = 'No jobs yet.';
    row.append(cell);
    body.append(row);
  }
}

function startPolling() {
  stopPolling();
  const tick = async () => {
    if (document.visibilityState === 'visible') await Promise.all([refreshList(), current ? refreshStatus(current) : null]);
    if (listTimer !== null) listTimer = window.setTimeout(tick, LIST_POLL_MS);
  };
  listTimer = window.setTimeout(tick, LIST_POLL_MS);
}

function stopPolling() {
  if (listTimer !== null) window.clearTimeout(listTimer);
  listTimer = null;
}

// ---- submitting -------------------------------------------------------------------------------

$('submit-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const fields = form.elements;
  const body = { job_url: fields.job_url.value.trim(), skip_existing: fields.skip_existing.checked };
  const release = fields.release.value.trim();
  if (release) body.release = release;
  const artifacts = fields.artifacts.value.split('\n').map((glob) => glob.trim()).filter(Boolean);
  if (artifacts.length > 0) body.artifacts = artifacts;
  const result = $('submit-result');
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  result.className = '';
  result.textContent = 'Submitting…';
  try {
    const { data } = await api(`${API}/download`, { method: 'POST', body });
    result.textContent = data.deduplicated ? `An identical download is already under way: showing job ${data.job_id}` : `Accepted: job ${data.job_id}`;
    window.location.hash = `job=${data.job_id}`;
    void refreshList();
  } catch (error) {
    result.className = 'error';
    result.textContent = error.status === 401 ? '' : `Not submitted: ${error.message}`;
  } finally {
    button.disabled = false;
  }
});

// ---- one job: status, progress, live log ------------------------------------------------------

/** The job on view: its id, stream, the ids of the lines on the page, and progress samples. */
let current = null;

function openJob(id) {
  closeJob();
  current = { id, source: null, rendered: new Set(), lastId: '', final: false, reopenMs: REOPEN_MIN_MS, reopenTimer: null, samples: [] };
  $('job-section').hidden = false;
  $('job-id').textContent = id;
  for (const field of ['job-status', 'job-release', 'job-url', 'job-started', 'job-completed', 'job-error', 'job-progress-text', 'stream-state']) {
    $(field).textContent = '';
  }
  $('job-status').className = 'status';
  $('job-progress').value = 0;
  $('cancel-button').hidden = true;
  // A fresh view replays the log from its first line: after a reload nothing is on the page, so
  // every line shows exactly once whatever the previous page had shown.
  $('log').replaceChildren();
  for (const row of $('jobs').tBodies[0].rows) row.classList.toggle('selected', row.dataset.id === id);
  const job = current;
  void refreshStatus(job).then((view) => {
    if (view && job === current) void openStream(job);
  });
}

function closeJob() {
  if (!current) return;
  current.source?.close();
  if (current.reopenTimer !== null) window.clearTimeout(current.reopenTimer);
  current = null;
  $('job-section').hidden = true;
}

async function refreshStatus(job) {
  if (job.final && job.statusShown) return job.view;
  try {
    const { data } = await api(`${API}/download/${job.id}/status`);
    if (job !== current) return null;
    job.view = data;
    renderStatus(job, data);
    return data;
  } catch (error) {
    if (error.status === 404) job.missing = true;
    if (job === current && error.status !== 401) $('job-error').textContent = error.status === 404 ? `No job ${job.id}` : `Could not read the status: ${error.message}`;
    return null;
  }
}

function renderStatus(job, view) {
  // The log's end can come a moment before the job's record says so: never show it going back.
  const status = FINAL.has(view.status) ? view.status : job.endStatus ?? view.status;
  statusBadge($('job-status'), status);
  $('job-release').textContent = view.release ?? '';
  $('job-url').textContent = view.job_url ?? (view.kind === 'batch' ? 'batch' : '');
  $('job-started').textContent = formatTime(view.started_at);
  $('job-completed').textContent = formatTime(view.completed_at);
  $('job-error').textContent = view.error ?? '';
  $('cancel-button').hidden = FINAL.has(status);
  if (FINAL.has(view.status) && job.final) job.statusShown = true;
  renderProgress(job, view.progress, status);
}

function renderProgress(job, progress, status = job.view?.status) {
  if (!progress) return;
  const now = performance.now();
  job.samples.push({ at: now, bytes: progress.bytes_done });
  while (job.samples.length > 2 && now - job.samples[0].at > SPEED_WINDOW_MS) job.samples.shift();
  const done = status === 'completed';
  $('job-progress').value = done ? 1 : fraction(progress);
  const parts = [
    `modules ${progress.modules_done}/${progress.modules_total}`,
    `files ${progress.files_done}/${progress.files_total}`,
    `${formatBytes(progress.bytes_done)} of ${formatBytes(progress.bytes_total)}`,
  ];
  if (!FINAL.has(status)) {
    const first = job.samples[0];
    const seconds = (now - first.at) / 1000;
    const speed = seconds >= 1 ? (progress.bytes_done - first.bytes) / seconds : 0;
    if (speed > 0) {
      parts.push(`${formatBytes(speed)}/s`);
      const left = progress.bytes_total - progress.bytes_done;
      // Totals grow as sizes become known, so this is the time left for what is known so far.
      if (left > 0) parts.push(`about ${formatDuration(left / speed)} left`);
    }
  }
  $('job-progress-text').textContent = parts.join(' · ');
}

/** The stream's URL: with a token, a stream token (EventSource cannot send headers). */
async function streamUrl(job) {
  let url = `${API}/download/${job.id}`;
  if (token) url = (await api(`${API}/download/${job.id}/stream-token`, { method: 'POST', body: {} })).data.logs_url;
  if (!job.lastId) return url;
  // Reopened after the browser gave up: continue after the last line on the page.
  const params = new URLSearchParams({ last_event_id: job.lastId });
  return `${url}${url.includes('?') ? '&' : '?'}${params}`;
}

async function openStream(job) {
  let url;
  try {
    url = await streamUrl(job);
  } catch (error) {
    if (error.status !== 401 && job === current) scheduleReopen(job, error.message);
    return;
  }
  if (job !== current || job.final) return;
  const source = new EventSource(url);
  job.source = source;
  source.addEventListener('open', () => {
    job.reopenMs = REOPEN_MIN_MS;
    $('stream-state').textContent = '';
  });
  source.addEventListener('message', (event) => {
    const data = JSON.parse(event.data);
    if (typeof data.message === 'string') {
      appendLine(job, event.lastEventId, data.message, data.timestamp);
    } else if (typeof data.status === 'string') {
      // The end of the log: its last line, then the stream closes.
      appendLine(job, event.lastEventId, `Job ${data.status}${data.error ? `: ${data.error}` : ''}`, null);
      finish(job, data.status);
    }
  });
  source.addEventListener('progress', (event) => renderProgress(job, JSON.parse(event.data)));
  source.addEventListener('complete', (event) => finish(job, JSON.parse(event.data).status));
  source.addEventListener('shutdown', () => {
    // The API instance is stopping; the browser reconnects (to another one) with Last-Event-ID.
    $('stream-state').textContent = 'The server is restarting; reconnecting…';
  });
  source.addEventListener('error', () => {
    if (job.final) return;
    if (source.readyState === EventSource.CONNECTING) {
      $('stream-state').textContent = 'Connection lost; reconnecting…';
      return;
    }
    // CLOSED: the browser will not retry by itself (an HTTP error answer, e.g. a 503).
    source.close();
    scheduleReopen(job, 'The log stream closed');
  });
}

function scheduleReopen(job, reason) {
  // A removed job (404) has no log to come back to; anything else is worth another try.
  if (job !== current || job.final || job.missing) {
    $('stream-state').textContent = '';
    return;
  }
  $('stream-state').textContent = `${reason}; retrying in ${Math.round(job.reopenMs / 1000)} s…`;
  job.reopenTimer = window.setTimeout(() => {
    job.reopenTimer = null;
    if (job !== current) return;
    void refreshStatus(job).then((view) => {
      if (view && job === current) void openStream(job);
      else if (job === current && !view) scheduleReopen(job, 'The job could not be read');
    });
  }, job.reopenMs);
  job.reopenMs = Math.min(REOPEN_MAX_MS, job.reopenMs * 2);
}

function finish(job, status) {
  if (job.final) return;
  job.final = true;
  job.endStatus = status;
  job.source?.close();
  $('stream-state').textContent = '';
  if (job.view) renderStatus(job, job.view);
  void refreshStatus(job);
  void refreshList();
}

/**
 * Adds one line unless a line with this id is already on the page. An event without an `id:` (the
 * server's note that trimmed lines were skipped) still carries the previous event's id in
 * `lastEventId`, as EventSource keeps it: it is told apart by its text and shown without an id.
 */
function appendLine(job, eventId, message, timestamp) {
  if (job !== current) return;
  let id = eventId;
  if (id && id === job.lastId && message !== job.lastMessage) id = '';
  if (id) {
    if (job.rendered.has(id)) return;
    job.rendered.add(id);
    job.lastId = id;
    job.lastMessage = message;
  }
  const log = $('log');
  // Follow new lines only while the reader is at the bottom (not while reading back).
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  const item = document.createElement('li');
  if (id) item.dataset.id = id;
  const time = document.createElement('time');
  if (timestamp) {
    time.dateTime = timestamp;
    time.textContent = new Date(timestamp).toLocaleTimeString();
  }
  const text = document.createElement('span');
  text.className = 'message';
  text.textContent = message;
  item.append(time, text);
  log.append(item);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

$('cancel-button').addEventListener('click', async () => {
  const job = current;
  if (!job) return;
  const button = $('cancel-button');
  button.disabled = true;
  try {
    const { data } = await api(`${API}/download/${job.id}/cancel`, { method: 'POST', body: {} });
    $('stream-state').textContent = data.message;
  } catch (error) {
    if (error.status !== 401) $('job-error').textContent = `Not cancelled: ${error.message}`;
  } finally {
    button.disabled = false;
    void refreshStatus(job);
  }
});

$('close-job').addEventListener('click', () => {
  window.location.hash = '';
});

// ---- start ------------------------------------------------------------------------------------

function jobFromHash() {
  const id = new URLSearchParams(window.location.hash.slice(1)).get('job');
  return id && /^[0-9a-f-]{36}$/i.test(id) ? id : null;
}

function showJobFromHash() {
  const id = jobFromHash();
  if (id && id !== current?.id) openJob(id);
  else if (!id) closeJob();
}

window.addEventListener('hashchange', () => {
  if (!$('app').hidden) showJobFromHash();
});

function stopAll() {
  stopPolling();
  closeJob();
}

async function start() {
  try {
    // One call tells whether a token is needed (401) before anything else is shown.
    const { data } = await api(`${API}/downloads?limit=20`);
    $('token-section').hidden = true;
    $('app').hidden = false;
    $('forget-token').hidden = !token;
    renderList(data.jobs);
    showJobFromHash();
    startPolling();
  } catch (error) {
    if (error.status !== 401) {
      $('app').hidden = false;
      $('jobs-error').textContent = `The API did not answer: ${error.message}`;
      showJobFromHash();
      startPolling();
    }
  }
}

void start();
