// TLS for the gRPC port, from the same certificate and key as the HTTP port: server credentials fed
// by the TlsFiles pair, which follow every reload (SIGHUP). grpc-js applies a new pair to the
// listening HTTP/2 server (setSecureContext): new connections get it, open ones keep theirs.
// Use: `server.bindAsync(address, ctx.tls ? grpcCredentials(ctx.tls) : grpc.ServerCredentials.createInsecure(), ...)`.

import * as grpc from '@grpc/grpc-js';
import type { TlsFiles } from './tls.js';

type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

/** The identity (certificate and key) of a TlsFiles as grpc-js's certificate provider. */
class TlsFilesProvider implements grpc.experimental.CertificateProvider {
  private readonly identity = new Set<IdentityListener>();
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly files: TlsFiles) {}

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identity.add(listener);
    this.unsubscribe ??= this.files.onChange((p) => {
      for (const l of this.identity) l({ certificate: p.cert, privateKey: p.key });
    });
    // Delivered after the call returns: grpc-js registers its own watcher only after adding this
    // listener, and an update delivered before that would be lost (the port would refuse every handshake).
    queueMicrotask(() => {
      if (!this.identity.has(listener)) return;
      const p = this.files.pair;
      listener({ certificate: p.cert, privateKey: p.key });
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identity.delete(listener);
    if (this.identity.size === 0 && this.unsubscribe !== null) {
      this.unsubscribe();
      this.unsubscribe = null;
    }
  }

  // No client certificates are asked for: the provider has no CA.
  addCaCertificateListener(_listener: CaListener): void {}
  removeCaCertificateListener(_listener: CaListener): void {}
}

/** Server credentials serving the TlsFiles pair, reloaded with it; no client certificate is requested. */
export function grpcCredentials(files: TlsFiles): grpc.ServerCredentials {
  // grpc-js names the first parameter the CA provider in its typings but uses it as the identity
  // provider (and the second as the CA one); passing the identity first and no CA works either way.
  return grpc.experimental.createCertificateProviderServerCredentials(new TlsFilesProvider(files), null, false);
}
