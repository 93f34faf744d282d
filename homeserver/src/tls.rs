//! HTTPS served directly: the rustls server configuration built from `server.tls_cert_file` and
//! `server.tls_key_file` (PEM), on rustls' ring provider, the same crypto library the signing
//! keys use (aws-lc-rs would add a second crypto library, built with CMake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerSettings;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain file could not be read or holds no PEM certificate.
    #[error("server.tls_cert_file {path}: {reason}")]
    Certificate {
        /// The file named in the settings.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The private key file could not be read or holds no PEM private key.
    #[error("server.tls_key_file {path}: {reason}")]
    Key {
        /// The file named in the settings.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (for example the key does not match the certificate).
    #[error("TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls configuration for `server`, or `None` when TLS is not configured (plain HTTP).
/// Settings validation has already checked that both files or neither are named.
pub fn server_config(server: &ServerSettings) -> Result<Option<ServerConfig>, TlsError> {
    let (Some(cert), Some(key)) = (server.tls_cert_file(), server.tls_key_file()) else {
        return Ok(None);
    };
    load(cert, key).map(Some)
}

fn load(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert_path.to_owned(),
            reason: "no PEM certificate in it".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    // An explicit provider, so that nothing depends on which rustls features other crates enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(config)
}
