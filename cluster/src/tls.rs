//! TLS between the nodes of a cluster: every node presents a certificate of
//! the cluster's own CA and accepts only peers that do (mutual TLS), on top of
//! the cookie handshake.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// A node's TLS settings for its cluster links, both directions.
#[derive(Clone)]
pub struct MeshTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
    /// The name every node's certificate carries, checked on connect.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cluster.tls: {0}")]
pub struct TlsError(String);

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("cannot read the {what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("the {what} {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "the {what} {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl MeshTls {
    /// Loads this node's certificate chain and key and the cluster's CA (PEM
    /// files); peers must present certificates for `server_name` signed by it.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        server_name: &str,
    ) -> Result<MeshTls, TlsError> {
        let chain = read_certs(cert, "certificate (cluster.tls.cert)")?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            TlsError(format!(
                "cannot read the private key (cluster.tls.key) {}: {e}",
                key.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for ca_cert in read_certs(ca, "CA certificate (cluster.tls.ca)")? {
            roots
                .add(ca_cert)
                .map_err(|e| TlsError(format!("the CA certificate is unusable: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError(format!("cannot verify peers with this CA: {e}")))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError(format!("the certificate and key do not fit: {e}")))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError(format!("the certificate and key do not fit: {e}")))?;
        let server_name = ServerName::try_from(server_name.to_string()).map_err(|e| {
            TlsError(format!(
                "cluster.tls.server_name `{server_name}` is not a name: {e}"
            ))
        })?;
        Ok(MeshTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}
