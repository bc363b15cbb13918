import { randomUUID } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { hashFile } from './download-file.js';
import type { FileWrite } from './file-writer.js';
import { resolveInside } from './safe-path.js';

export const MANIFEST_NAME = '.ferry-manifest.json';

const ManifestSchema = z.object({
  version: z.literal(1),
  release: z.string(),
  module: z.string(),
  build: z.number().int(),
  source: z.string(),
  completed_at: z.string(),
  files: z.array(
    z.object({ path: z.string(), size: z.number().int().nonnegative(), sha256: z.string(), url: z.string() }),
  ),
});
export type Manifest = z.infer<typeof ManifestSchema>;

/**
 * A completed module folder's manifest as a write for FileWriter.writeAll, the last of its module's
 * files: written to a temporary name and renamed only after every file was fsynced and renamed, so
 * its presence means "complete".
 *
 * The manifest itself is not fsynced: ferry never trusts one without checking every file it lists
 * (readVerifiedManifest: size and SHA-256), so a manifest that a power cut lost or left torn costs
 * one download of its module again, never a wrong file; the artifacts themselves are fsynced. This
 * saved one fsync of four per small job: one job's files cost 1.33 ms of machine CPU with four, 1.12
 * with three, on the bench VM (issue 5, small jobs; docs/benchmarks.md, "Small jobs: where the rest goes").
 */
export function manifestWrite(moduleDir: string, manifest: Manifest): FileWrite {
  const target = path.join(moduleDir, MANIFEST_NAME);
  // A unique temporary name: two jobs finishing the same module never share it.
  return { partPath: `${target}.${randomUUID()}.part`, bytes: Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`), target, fsync: false };
}

/**
 * The manifest of `moduleDir` when it is present, valid, lists exactly `expectedPaths`, and every
 * file on disk still has its recorded size and SHA-256; otherwise null.
 */
export async function readVerifiedManifest(moduleDir: string, expectedPaths: readonly string[]): Promise<Manifest | null> {
  let manifest: Manifest;
  try {
    const parsed = ManifestSchema.safeParse(JSON.parse(await readFile(path.join(moduleDir, MANIFEST_NAME), 'utf8')));
    if (!parsed.success) return null;
    manifest = parsed.data;
  } catch {
    return null;
  }
  const listed = new Set(manifest.files.map((file) => file.path));
  if (listed.size !== expectedPaths.length || expectedPaths.some((item) => !listed.has(item))) return null;
  for (const file of manifest.files) {
    try {
      const absolute = resolveInside(moduleDir, file.path);
      const info = await stat(absolute);
      if (!info.isFile() || info.size !== file.size) return null;
      if ((await hashFile(absolute)).sha256 !== file.sha256) return null;
    } catch {
      return null;
    }
  }
  return manifest;
}
