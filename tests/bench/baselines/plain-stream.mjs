// "Plain Node streaming" of the big-artifacts scenario: http.get into a file through pipeline, no
// hashing, no fsync. Prints {"bytes", "ms"} measured from the request to the last byte written.
// Usage: node plain-stream.mjs <url> <file>
import { createWriteStream } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { pipeline } from 'node:stream/promises';

const [url, file] = process.argv.slice(2);
const started = performance.now();
const response = await new Promise((resolve, reject) => http.get(url, resolve).on('error', reject));
if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode}`);
let bytes = 0;
response.on('data', (chunk) => (bytes += chunk.length));
await pipeline(response, createWriteStream(file));
process.stdout.write(`${JSON.stringify({ bytes, ms: performance.now() - started })}\n`);
