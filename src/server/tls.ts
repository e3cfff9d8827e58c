// The server's TLS certificate and key (config `tls: { cert, key }`, PEM files): read and checked
// (a certificate, a private key, and that they belong together) at start and again on every reload
// (SIGHUP), which keeps the current pair when the new files are wrong. Listeners (the gRPC server's
// credentials) hear of every pair that passed. uWS takes file names, not bytes, so each app is
// built from a private copy of the bytes that were checked: a file replaced between our check and
// uWS's read cannot slip in unchecked, and a cert and key renewed one after the other are never mixed.

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configInvalid } from '../errors.js';

export interface TlsPair {
  /** PEM: the certificate, optionally followed by its chain. */
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly subject: string;
  readonly notAfter: string;
  readonly fingerprint256: string;
}

export type TlsListener = (pair: TlsPair) => void;

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw configInvalid(`tls.${what}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Reads and checks a certificate and key pair; throws CONFIG_INVALID naming what is wrong. */
export function loadPair(certFile: string, keyFile: string): TlsPair {
  const cert = read(certFile, 'cert');
  const key = read(keyFile, 'key');
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw configInvalid(`tls.cert: ${certFile} is not a PEM certificate (${(e as Error).message})`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (e) {
    throw configInvalid(`tls.key: ${keyFile} is not a PEM private key without a passphrase (${(e as Error).message})`);
  }
  if (!x509.checkPrivateKey(privateKey))
    throw configInvalid(`tls.key: ${keyFile} is not the private key of the certificate in ${certFile}`);
  return {
    cert,
    key,
    subject: x509.subject.replace(/\n/g, ', '),
    notAfter: new Date(x509.validTo).toISOString(),
    fingerprint256: x509.fingerprint256,
  };
}

export class TlsFiles {
  private current: TlsPair;
  private readonly listeners = new Set<TlsListener>();

  constructor(
    readonly certFile: string,
    readonly keyFile: string,
  ) {
    this.current = loadPair(certFile, keyFile);
  }

  get pair(): TlsPair {
    return this.current;
  }

  /** Days until the certificate expires (negative once it has). */
  get daysLeft(): number {
    return (Date.parse(this.current.notAfter) - Date.now()) / 86_400_000;
  }

  /** Reads the files again; on success the new pair is current and listeners hear of it. Throws (keeping the old pair) otherwise. */
  reload(): TlsPair {
    const next = loadPair(this.certFile, this.keyFile);
    this.current = next;
    for (const l of this.listeners) l(next);
    return next;
  }

  onChange(listener: TlsListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Runs `build` (a uWS SSLApp constructor) with file names holding the current pair: private
   * copies in a 0700 temporary directory, removed as soon as `build` returns (uWS reads them then).
   */
  withFiles<T>(build: (files: { cert_file_name: string; key_file_name: string }) => T): T {
    const dir = mkdtempSync(join(tmpdir(), 'scoreline-tls-'));
    try {
      const cert = join(dir, 'cert.pem');
      const key = join(dir, 'key.pem');
      writeFileSync(cert, this.current.cert, { mode: 0o600 });
      writeFileSync(key, this.current.key, { mode: 0o600 });
      return build({ cert_file_name: cert, key_file_name: key });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
